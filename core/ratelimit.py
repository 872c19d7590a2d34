"""Guess limits: wrong PESEL/ELS, chat codes and activation codes, per account and per student."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.errors import RateLimitedError
from core.models import GuessAttempt

__all__ = ["check_allowed", "record_failure"]

Scope = tuple[str, str]  # ("account", "telegram:42") or ("student", "17")


def check_allowed(
    session: Session,
    kind: str,
    scopes: Iterable[Scope],
    *,
    now: datetime,
    limit: int,
    window: timedelta,
) -> None:
    """Raise RateLimitedError (with when the lock lifts) if any scope used up its guesses."""
    since = now - window
    for scope, key in scopes:
        times = session.exec(
            select(GuessAttempt.at)
            .where(GuessAttempt.kind == kind, GuessAttempt.scope == scope, GuessAttempt.key == key)
            .where(col(GuessAttempt.at) > since)
            .order_by(sa.desc(col(GuessAttempt.at)))
            .limit(limit)
        ).all()
        if len(times) >= limit:
            # The lock lifts when the oldest of the last `limit` failures leaves the window.
            raise RateLimitedError(min(times) + window)


def record_failure(session: Session, kind: str, scopes: Iterable[Scope], *, now: datetime) -> None:
    for scope, key in scopes:
        session.add(GuessAttempt(kind=kind, scope=scope, key=key, at=now))
