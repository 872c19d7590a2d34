"""Counted attempts: wrong PESEL/ELS, chat codes and activation codes, and codes mailed,
per account and per student, each kind with its own limit and window.

On PostgreSQL a check and the record that follows it are serialised per (kind, scope, key)
for the rest of the transaction: otherwise turns from many accounts against one student
all read "under the limit" at once and every one of them gets its guess.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.app.errors import RateLimitedError
from core.storage.models import GuessAttempt

__all__ = ["advisory_key", "check_allowed", "locked_scopes", "record", "record_failure"]

Scope = tuple[str, str]  # ("account", "telegram:42") or ("student", "17")


def advisory_key(kind: str, scope: str, key: str) -> int:
    """A stable signed 64-bit key for pg_advisory_xact_lock: the same in every process."""
    name = f"mleg:attempts\x1f{kind}\x1f{scope}\x1f{key}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _serialise(session: Session, kind: str, scopes: list[Scope]) -> None:
    # SQLite needs nothing: the unit of work holds the database's write lock (BEGIN IMMEDIATE).
    # Sorted, so two transactions over overlapping scopes take them in one order (no deadlock).
    if session.get_bind().dialect.name != "postgresql":
        return
    for scope, key in sorted(set(scopes)):
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(kind, scope, key)})


def locked_scopes(
    session: Session,
    kind: str,
    scopes: Iterable[Scope],
    *,
    now: datetime,
    limit: int,
    window: timedelta,
    limits: Mapping[Scope, int] | None = None,
) -> dict[Scope, datetime]:
    """The scopes that used up their attempts, each with when its lock lifts.

    `limits`: a limit of its own for some scopes (the album's is higher than an account's).
    """
    since = now - window
    locked: dict[Scope, datetime] = {}
    for scope in dict.fromkeys(scopes):
        own = (limits or {}).get(scope, limit)
        times = session.exec(
            select(GuessAttempt.at)
            .where(GuessAttempt.kind == kind, GuessAttempt.scope == scope[0], GuessAttempt.key == scope[1])
            .where(col(GuessAttempt.at) > since)
            .order_by(sa.desc(col(GuessAttempt.at)))
            .limit(own)
        ).all()
        if len(times) >= own:
            # The lock lifts when the oldest of the last `own` attempts leaves the window.
            locked[scope] = min(times) + window
    return locked


def check_allowed(
    session: Session,
    kind: str,
    scopes: Iterable[Scope],
    *,
    now: datetime,
    limit: int,
    window: timedelta,
    limits: Mapping[Scope, int] | None = None,
) -> None:
    """Raise RateLimitedError (with when the last lock lifts) if any scope used up its attempts.

    On PostgreSQL this first takes the scopes' transaction locks, held until commit, so the
    caller's record of this attempt lands before anyone else's check reads the count.
    """
    scopes = list(scopes)
    _serialise(session, kind, scopes)
    locked = locked_scopes(session, kind, scopes, now=now, limit=limit, window=window, limits=limits)
    if locked:
        # With several scopes locked, the student can try again only when all have lifted.
        raise RateLimitedError(max(locked.values()))


def record(session: Session, kind: str, scopes: Iterable[Scope], *, now: datetime) -> None:
    """Count one attempt (a wrong guess, a code mailed) against every scope."""
    scopes = list(scopes)
    _serialise(session, kind, scopes)  # immediate when check_allowed took them in this transaction
    for scope, key in scopes:
        session.add(GuessAttempt(kind=kind, scope=scope, key=key, at=now))


def record_failure(session: Session, kind: str, scopes: Iterable[Scope], *, now: datetime) -> None:
    record(session, kind, scopes, now=now)
