"""The outbox: every message is a row first (idempotency key), then a sender drains it.

A crash between "decided" and "sent" leaves a pending row, so nothing is lost; the
idempotency key makes a second decision about the same thing a no-op, so nothing is
decided twice. Bodies are encrypted at rest and wiped once sent. This module queues the
rows, and takes back ones whose content died before they went out (`cancel_waiting`);
core.messaging.sending claims, attempts and records them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core.messaging.outgoing import OutgoingMessage
from core.security.secrets_box import SecretBox
from core.storage.db import lock_for_write
from core.storage.models import OutboxMessage, OutboxStatus

__all__ = [
    "cancel_waiting",
    "enqueue",
    "enqueue_once",
    "enqueue_under_lock",
    "mark_cancelled",
    "open_body",
    "reserve",
    "set_body",
]

_TABLE = OutboxMessage.__table__  # type: ignore[attr-defined]


def _new_row(key: str, channel: str, recipient: str, kind: str, language: str, body: str | None,
             now: datetime, **links: int | None) -> dict[str, Any]:
    """A pending row's columns, due now; `links`: student_id, credential_id, thread_id."""
    return {"idempotency_key": key, "channel": channel, "recipient": recipient, "kind": kind, "language": language,
            "body": body, "status": OutboxStatus.PENDING.value, "attempts": 0, "next_attempt_at": now,
            "created_at": now, **links}


def enqueue(
    session: Session,
    box: SecretBox,
    *,
    key: str,
    channel: str,
    recipient: str,
    kind: str,
    message: OutgoingMessage,
    now: datetime,
    language: str = "pl",
    student_id: int | None = None,
    credential_id: int | None = None,
    thread_id: int | None = None,
) -> OutboxMessage:
    """Queue a message once per key; a second call with the same key returns the first row."""
    existing = session.exec(
        select(OutboxMessage).where(OutboxMessage.idempotency_key == key)
    ).first()
    if existing is not None:
        return existing
    row = OutboxMessage(**_new_row(key, channel, recipient, kind, language, box.encrypt(message.to_json()), now,
                                   student_id=student_id, credential_id=credential_id, thread_id=thread_id))
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        # Another process queued the same key between our read and our insert.
        return session.exec(
            select(OutboxMessage).where(OutboxMessage.idempotency_key == key)
        ).one()
    return row


def enqueue_once(
    session: Session,
    box: SecretBox,
    *,
    key: str,
    channel: str,
    recipient: str,
    kind: str,
    message: OutgoingMessage,
    now: datetime,
    language: str = "pl",
    student_id: int | None = None,
    thread_id: int | None = None,
) -> bool:
    """`enqueue` for a caller that needs no row back: True when queued, False when the key was.

    One INSERT ... ON CONFLICT (idempotency_key) DO NOTHING on the session's connection: no
    lookup first (which flushed the whole session), no SAVEPOINT and no ORM object, which
    together were a fifth of the mailbox's time per mail. Another process inserting the same
    key meanwhile is the database's to settle, as in `enqueue` (PostgreSQL waits for its
    commit, then does nothing; SQLite has one writer).
    """
    row = _new_row(key, channel, recipient, kind, language, box.encrypt(message.to_json()), now,
                   student_id=student_id, thread_id=thread_id)
    result = session.connection().execute(_insert_new_keys(session), row)
    return bool(result.rowcount)


def enqueue_under_lock(
    session: Session,
    box: SecretBox,
    messages: list[tuple[str, OutgoingMessage]],
    *,
    channel: str,
    recipient: str,
    kind: str,
    now: datetime,
    language: str = "pl",
) -> None:
    """Queue several (key, message) pairs once per key, in one statement.

    Only for a caller that already holds the lock serialising these keys (a conversation
    turn holds its conversation's row lock on PostgreSQL, SQLite's write lock on SQLite):
    no one else can insert them meanwhile, so `enqueue`'s SAVEPOINT per row, which costs
    more than the rest of a chat turn together, is not needed. A key already queued (the
    same update delivered again after a crash) is skipped by the database itself.
    """
    if not messages:
        return
    rows = [_new_row(key, channel, recipient, kind, language, box.encrypt(message.to_json()), now)
            for key, message in messages]
    # Core, not the ORM's bulk insert, and no lookup first: together they were half of a chat turn.
    session.connection().execute(_insert_new_keys(session), rows)


# Built once per dialect: the statement is immutable, and building it costs more than running it.
_INSERT_NEW_KEYS: dict[str, sa.Insert] = {
    "postgresql": postgresql.insert(_TABLE).on_conflict_do_nothing(index_elements=["idempotency_key"]),
    "sqlite": sqlite.insert(_TABLE).on_conflict_do_nothing(index_elements=["idempotency_key"]),
}


def _insert_new_keys(session: Session) -> sa.Insert:
    """INSERT ... ON CONFLICT (idempotency_key) DO NOTHING in the session's dialect."""
    return _INSERT_NEW_KEYS["postgresql" if session.get_bind().dialect.name == "postgresql" else "sqlite"]


def reserve(
    session: Session,
    *,
    key: str,
    channel: str,
    recipient: str,
    kind: str,
    now: datetime,
    language: str = "pl",
    thread_id: int | None = None,
) -> OutboxMessage | None:
    """Insert the row for `key` (no body yet) first thing in the caller's unit; None if the key exists.

    For work that must be done once per key by whichever process gets there first (one
    Telegram update polled by two servers): the key is taken before the work, so the
    loser does nothing. On PostgreSQL an insert of a key another open transaction has just
    inserted waits for that transaction: None once it commits, the row once it rolls back.
    The caller gives the row its body (`set_body`) before it commits.
    """
    lock_for_write(session)  # SQLite: the write lock for the whole unit, as the row lock on PostgreSQL
    values = _new_row(key, channel, recipient, kind, language, None, now, thread_id=thread_id)
    inserted = session.execute(
        _insert_new_keys(session).values(values).returning(_TABLE.c.id)
    ).scalar()
    return None if inserted is None else session.get(OutboxMessage, inserted)


def set_body(box: SecretBox, row: OutboxMessage, message: OutgoingMessage) -> None:
    row.body = box.encrypt(message.to_json())


def open_body(box: SecretBox, row: OutboxMessage) -> OutgoingMessage:
    if row.body is None:
        raise ValueError(f"outbox message {row.id} has no body (already sent and wiped)")
    return OutgoingMessage.from_json(box.decrypt(row.body))


def _cancelled(reason: str, now: datetime) -> dict[str, Any]:
    """Taken back: kept on record with the reason, the body (dead data) wiped, never attempted again,
    and not a delivery failure (no alert, not counted as failed)."""
    return {"status": OutboxStatus.CANCELLED.value, "lease_until": None, "body": None,
            "last_error": reason[:2000], "next_attempt_at": now}


def mark_cancelled(row: OutboxMessage, reason: str, now: datetime) -> None:
    for name, value in _cancelled(reason, now).items():
        setattr(row, name, value)


def cancel_waiting(session: Session, *where: sa.ColumnElement[bool], reason: str, now: datetime) -> int:
    """Cancel the rows matching `where` that still wait to be sent (pending); returns how many.

    A row being sent at this moment (leased) is left to finish: it may already be at the
    receiver, and its sender records the outcome over its own lease.
    """
    result = session.execute(
        sa.update(OutboxMessage).where(OutboxMessage.status == OutboxStatus.PENDING, *where)  # type: ignore[arg-type]
        .values(_cancelled(reason, now)))
    return int(result.rowcount)  # type: ignore[attr-defined]
