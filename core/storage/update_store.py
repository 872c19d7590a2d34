"""Updates received by a webhook, stored before they are acknowledged, until they are handled.

A chat platform that pushes updates (Telegram's webhook) never sends an acknowledged one
again, so the webhook answers 200 only once `store` committed the update. A worker then
handles the stored updates in update_id order and marks each handled: in the turn's own
transaction when the update is a student's turn (ConversationService.handle), else right
after its handler returned. `store` is idempotent by (channel, update_id): the platform's
retries of an update change nothing, whichever server they reach.

The payload carries what the student typed, so it is encrypted with the instance secret and
wiped when the update is handled; the bare row (ids and times) stays HANDLED_KEEP longer to
recognise a late retry, then retention deletes it (core.jobs.retention).

Also here: the webhook's health (WebhookState) as the servers last saw it, for `mleg status`.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from core.security.secrets_box import SecretBox
from core.storage.db import unit_of_work
from core.storage.models import StoredUpdate, WebhookState

__all__ = [
    "HANDLED_KEEP",
    "NOTIFY_CHANNEL",
    "Pending",
    "StoredRef",
    "Waiting",
    "handling",
    "mark_handled",
    "pending",
    "record_info",
    "record_received",
    "record_set",
    "store",
    "waiting",
]

# Telegram keeps an unacknowledged update for 24 hours and retries it within them: a handled
# row kept for two days recognises every retry.
HANDLED_KEEP = timedelta(days=2)
# PostgreSQL's LISTEN/NOTIFY channel that says "an update was stored" (payload: its channel).
NOTIFY_CHANNEL = "mleg_stored_update"


@dataclass
class StoredRef:
    """The stored update being handled now: its row, and whether its turn already marked it."""

    row_id: int
    marked: bool = False


# Set by the worker around each update's handlers (they run in its task, or in tasks copied
# from it): a student's turn reads it to mark the row in its own transaction.
handling: ContextVar[StoredRef | None] = ContextVar("mleg_stored_update", default=None)


@dataclass(frozen=True)
class Waiting:
    row_id: int
    update_id: int
    payload: bytes | None
    received_at: datetime


@dataclass(frozen=True)
class Pending:
    count: int
    oldest_received_at: datetime | None
    oldest_update_id: int | None
    last_received_at: datetime | None


def _insert(session: Session, model: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


def store(engine: Engine, box: SecretBox, *, channel: str, update_id: int, raw: bytes, now: datetime) -> bool:
    """Store one received update, committed when this returns; False if it was stored before.

    On PostgreSQL the commit also notifies NOTIFY_CHANNEL: the server that handles the updates
    may be another one, and it hears of the new row at once instead of at its next look.
    """
    with unit_of_work(engine) as session:
        statement = _insert(session, StoredUpdate).values(
            channel=channel, update_id=update_id, payload=box.encrypt(raw), received_at=now,
        ).on_conflict_do_nothing(index_elements=["channel", "update_id"]).returning(col(StoredUpdate.id))
        new = session.execute(statement).scalar() is not None
        if new and session.get_bind().dialect.name == "postgresql":
            session.execute(sa.text("SELECT pg_notify(:name, :channel)"), {"name": NOTIFY_CHANNEL, "channel": channel})
        return new


def waiting(engine: Engine, *, channel: str, limit: int) -> list[Waiting]:
    """The oldest updates not handled yet, in update_id order (the platform's order)."""
    with Session(engine) as session:
        rows = session.execute(
            sa.select(col(StoredUpdate.id), col(StoredUpdate.update_id), col(StoredUpdate.payload),
                      col(StoredUpdate.received_at))
            .where(col(StoredUpdate.channel) == channel, col(StoredUpdate.handled_at).is_(None))
            .order_by(col(StoredUpdate.update_id)).limit(limit)
        ).all()
    return [Waiting(*row) for row in rows]


def mark_handled(session: Session, row_id: int, now: datetime) -> None:
    """Marks the row handled and wipes its payload, in the caller's transaction."""
    session.execute(
        sa.update(StoredUpdate).where(col(StoredUpdate.id) == row_id, col(StoredUpdate.handled_at).is_(None))
        .values(handled_at=now, payload=None)
    )


def pending(session: Session, *, channel: str) -> Pending:
    """How many stored updates wait to be handled, the oldest of them, and the newest received."""
    count, oldest = session.execute(
        sa.select(sa.func.count(), sa.func.min(col(StoredUpdate.received_at)))
        .where(col(StoredUpdate.channel) == channel, col(StoredUpdate.handled_at).is_(None))
    ).one()
    first = session.execute(
        sa.select(col(StoredUpdate.update_id))
        .where(col(StoredUpdate.channel) == channel, col(StoredUpdate.handled_at).is_(None))
        .order_by(col(StoredUpdate.update_id)).limit(1)
    ).scalar()
    newest = session.execute(
        sa.select(sa.func.max(col(StoredUpdate.received_at))).where(col(StoredUpdate.channel) == channel)
    ).scalar()
    state = session.get(WebhookState, channel)
    if state is not None and state.last_received_at is not None and (newest is None or state.last_received_at > newest):
        newest = state.last_received_at
    return Pending(int(count), _utc(oldest), first, _utc(newest))


def _utc(value: Any) -> datetime | None:
    """An aggregate's instant as UTC, whatever form the driver gave it in."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _upsert(engine: Engine, channel: str, values: dict[str, Any]) -> None:
    with unit_of_work(engine) as session:
        statement = _insert(session, WebhookState).values(channel=channel, **values)
        session.execute(statement.on_conflict_do_update(index_elements=["channel"], set_=values))


def record_set(engine: Engine, *, channel: str, url: str, error: str | None, now: datetime) -> None:
    """The outcome of setWebhook (error None: it worked)."""
    _upsert(engine, channel, {"url": url, "set_at": now, "set_error": error})


def record_info(engine: Engine, *, channel: str, pending_count: int | None, error_at: datetime | None,
                error: str | None, now: datetime) -> None:
    """What the platform says about its deliveries to us (Telegram's getWebhookInfo)."""
    _upsert(engine, channel, {"info_checked_at": now, "info_pending": pending_count,
                              "info_error_at": error_at, "info_error": error})


def record_received(engine: Engine, *, channel: str, at: datetime) -> None:
    """The newest update received (kept apart from the rows, which retention deletes)."""
    with unit_of_work(engine) as session:
        statement = _insert(session, WebhookState).values(channel=channel, last_received_at=at)
        column = statement.excluded.last_received_at
        session.execute(statement.on_conflict_do_update(index_elements=["channel"], set_={
            "last_received_at": sa.case(
                (col(WebhookState.last_received_at).is_(None), column),
                (col(WebhookState.last_received_at) < column, column),
                else_=col(WebhookState.last_received_at)),
        }))
