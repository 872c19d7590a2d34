"""The outbox: every message is a row first (idempotency key), then a sender drains it.

A crash between "decided" and "sent" leaves a pending row, so nothing is lost; the
idempotency key makes a second decision about the same thing a no-op, so nothing is
decided twice. Bodies are encrypted at rest and wiped once sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.db import lock_for_write
from core.models import OutboxMessage, OutboxStatus
from core.outgoing import OutgoingMessage
from core.secrets_box import SecretBox

__all__ = [
    "DeliveryResult",
    "attempt",
    "claim",
    "claim_due",
    "drain_once",
    "enqueue",
    "enqueue_under_lock",
    "mark_failed",
    "mark_retry",
    "mark_sent",
    "open_body",
    "record",
    "release",
]

MAX_ATTEMPTS = 12
LEASE = timedelta(minutes=5)


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
    row = OutboxMessage(
        idempotency_key=key,
        channel=channel,
        recipient=recipient,
        kind=kind,
        language=language,
        body=box.encrypt(message.to_json()),
        status=OutboxStatus.PENDING,
        next_attempt_at=now,
        created_at=now,
        student_id=student_id,
        credential_id=credential_id,
        thread_id=thread_id,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        # Another process queued the same key between our read and our insert.
        return session.exec(
            select(OutboxMessage).where(OutboxMessage.idempotency_key == key)
        ).one()
    return row


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
    rows = [
        {"idempotency_key": key, "channel": channel, "recipient": recipient, "kind": kind, "language": language,
         "body": box.encrypt(message.to_json()), "status": OutboxStatus.PENDING.value, "attempts": 0,
         "next_attempt_at": now, "created_at": now}
        for key, message in messages
    ]
    # Core, not the ORM's bulk insert, and no lookup first: together they were half of a chat turn.
    session.connection().execute(_insert_new_keys(session), rows)


def _insert_new_keys(session: Session) -> sa.Insert:
    """INSERT ... ON CONFLICT (idempotency_key) DO NOTHING in the session's dialect."""
    table = OutboxMessage.__table__  # type: ignore[attr-defined]
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=["idempotency_key"])
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=["idempotency_key"])


def open_body(box: SecretBox, row: OutboxMessage) -> OutgoingMessage:
    if row.body is None:
        raise ValueError(f"outbox message {row.id} has no body (already sent and wiped)")
    return OutgoingMessage.from_json(box.decrypt(row.body))


def claim_due(
    session: Session, *, channel: str, now: datetime, limit: int = 50
) -> list[OutboxMessage]:
    """Lease due rows to this sender; an expired lease (a crashed sender) makes a row due again."""
    due = (
        select(OutboxMessage)
        .where(OutboxMessage.channel == channel)
        .where(
            sa.or_(
                sa.and_(
                    OutboxMessage.status == OutboxStatus.PENDING,
                    col(OutboxMessage.next_attempt_at) <= now,
                ),
                sa.and_(
                    OutboxMessage.status == OutboxStatus.SENDING,
                    col(OutboxMessage.lease_until) <= now,
                ),
            )
        )
        .order_by(col(OutboxMessage.next_attempt_at), col(OutboxMessage.id))
        .limit(limit)
    )
    lock_for_write(session)  # SQLite: the write lock, as FOR UPDATE does on PostgreSQL
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    rows = list(session.exec(due).all())
    for row in rows:
        row.status = OutboxStatus.SENDING
        row.lease_until = now + LEASE
        row.attempts += 1
        session.add(row)
    return rows


def mark_sent(row: OutboxMessage, now: datetime, external_id: str | None = None) -> None:
    row.status = OutboxStatus.SENT
    row.sent_at = now
    row.body = None  # the clear code must not outlive its delivery
    row.lease_until = None
    row.last_error = None
    row.external_id = external_id


def mark_retry(row: OutboxMessage, now: datetime, error: str, delay: timedelta | None = None) -> None:
    """A temporary failure: back off exponentially; past MAX_ATTEMPTS it becomes permanent."""
    if row.attempts >= MAX_ATTEMPTS:
        mark_failed(row, now, f"gave up after {row.attempts} attempts: {error}")
        return
    backoff = delay or timedelta(seconds=min(3600, 10 * 2 ** max(0, row.attempts - 1)))
    row.status = OutboxStatus.PENDING
    row.next_attempt_at = now + backoff
    row.lease_until = None
    row.last_error = error[:2000]


def mark_failed(row: OutboxMessage, now: datetime, error: str) -> None:
    """A permanent failure: kept (body wiped) and shown to staff, never retried."""
    row.status = OutboxStatus.FAILED
    row.lease_until = None
    row.body = None
    row.last_error = error[:2000]
    row.next_attempt_at = now


@dataclass(frozen=True)
class DeliveryResult:
    """What a sender reports for one message."""

    ok: bool
    external_id: str | None = None
    error: str | None = None
    permanent: bool = False
    retry_after: timedelta | None = None


Deliver = Callable[[OutboxMessage, OutgoingMessage], Awaitable[DeliveryResult]]


def claim(engine: Engine, *, channel: str, now: datetime, limit: int = 50) -> list[OutboxMessage]:
    """`claim_due` in a transaction of its own, committed: the leases hold before any sending."""
    with Session(engine, expire_on_commit=False) as session:
        rows = claim_due(session, channel=channel, now=now, limit=limit)
        session.commit()
    return rows


def release(engine: Engine, row_ids: list[int]) -> None:
    """Give claimed rows that were never attempted back to the outbox, due at once."""
    with Session(engine) as session:
        lock_for_write(session)
        session.execute(
            sa.update(OutboxMessage)
            .where(col(OutboxMessage.id).in_(row_ids), col(OutboxMessage.status) == OutboxStatus.SENDING)
            .values(status=OutboxStatus.PENDING, lease_until=None, attempts=OutboxMessage.attempts - 1)
        )
        session.commit()


async def attempt(box: SecretBox, row: OutboxMessage, deliver: Deliver) -> DeliveryResult:
    """Open a claimed row's body and hand it to the sender; any failure becomes a result."""
    try:
        message = open_body(box, row)
    except Exception as exc:  # undecryptable: the secret changed; retrying cannot help
        return DeliveryResult(ok=False, error=f"cannot open body: {exc}", permanent=True)
    try:
        return await deliver(row, message)
    except Exception as exc:
        return DeliveryResult(ok=False, error=f"{type(exc).__name__}: {exc}")


def record(engine: Engine, row_id: int | None, result: DeliveryResult, now: datetime) -> bool:
    """Record one delivery's outcome in its own commit; False when the row is gone."""
    with Session(engine, expire_on_commit=False) as session:
        lock_for_write(session)
        fresh = session.get(OutboxMessage, row_id)
        if fresh is None:
            return False
        if result.ok:
            mark_sent(fresh, now, result.external_id)
        elif result.permanent:
            mark_failed(fresh, now, result.error or "permanent failure")
        else:
            mark_retry(fresh, now, result.error or "temporary failure", result.retry_after)
        session.add(fresh)
        session.commit()
    return True


async def drain_once(
    engine: Engine,
    box: SecretBox,
    *,
    channel: str,
    now: Callable[[], datetime],
    deliver: Deliver,
    limit: int = 50,
) -> int:
    """Claim due rows (committed), deliver each, record each outcome in its own commit."""
    delivered = 0
    for row in claim(engine, channel=channel, now=now(), limit=limit):
        result = await attempt(box, row, deliver)
        recorded = record(engine, row.id, result, now())
        assert recorded, f"outbox row {row.id} vanished while it was leased"
        delivered += int(result.ok)
    return delivered
