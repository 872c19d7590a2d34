"""The outbox: every message is a row first (idempotency key), then a sender drains it.

A crash between "decided" and "sent" leaves a pending row, so nothing is lost; the
idempotency key makes a second decision about the same thing a no-op, so nothing is
decided twice. Bodies are encrypted at rest and wiped once sent.

Several drainers (two `mleg serve` on one PostgreSQL) share the rows through leases: a
claim sets `lease_until` and counts the attempt, and the pair (id, attempts) names that
one lease. A drainer attempts a row only while its lease holds (`still_leased`, checked
before each attempt: a row can wait in a batch or a chain while a slow delivery ahead of
it uses up its lease, and meanwhile another drainer may have taken it), and records an
outcome, or gives a row back, only over its own lease (`record`, `release`): a drainer
whose lease ran out leaves the row to whoever holds it now.

A failed attempt is never silent: `record` hands it to a core.messaging.delivery_failures reporter
(a WARNING per attempt, an ERROR once a row keeps failing or is given up). An exception
that escapes a sender is a defect unless it is a transport error (`TRANSPORT_ERRORS`):
retried at a slow pace, its traceback logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from core.messaging.delivery_failures import Defect, FailureReporter, defect_backoff, defect_of
from core.messaging.outgoing import OutgoingMessage
from core.security.secrets_box import SecretBox
from core.storage.db import lock_for_write
from core.storage.models import OutboxMessage, OutboxStatus

__all__ = [
    "TRANSPORT_ERRORS",
    "DeliveryResult",
    "attempt",
    "claim",
    "claim_due",
    "drain_once",
    "enqueue",
    "enqueue_once",
    "enqueue_under_lock",
    "mark_failed",
    "mark_retry",
    "mark_sent",
    "open_body",
    "record",
    "release",
    "reserve",
    "set_body",
    "still_leased",
]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
LEASE = timedelta(minutes=5)
# A lease taken this recently (at most a tenth of LEASE ago) cannot have run out, so the
# attempt goes ahead without asking the database: a chat reply is claimed and sent within
# milliseconds, and gets no statement added to its path. A row that waited longer in its
# batch or chain has its lease renewed first.
TRUST_FRESH_LEASE = timedelta(seconds=30)
_TABLE = OutboxMessage.__table__  # type: ignore[attr-defined]
# Escaping a sender, these are the network or the database being away for a moment, retried
# at the usual pace; anything else a sender did not catch is a defect.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, OperationalError)
_DEFAULT_REPORTER = FailureReporter()


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
    row = {"idempotency_key": key, "channel": channel, "recipient": recipient, "kind": kind, "language": language,
           "body": box.encrypt(message.to_json()), "status": OutboxStatus.PENDING.value, "attempts": 0,
           "next_attempt_at": now, "created_at": now, "student_id": student_id, "thread_id": thread_id}
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
    rows = [
        {"idempotency_key": key, "channel": channel, "recipient": recipient, "kind": kind, "language": language,
         "body": box.encrypt(message.to_json()), "status": OutboxStatus.PENDING.value, "attempts": 0,
         "next_attempt_at": now, "created_at": now}
        for key, message in messages
    ]
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
    values = {"idempotency_key": key, "channel": channel, "recipient": recipient, "kind": kind,
              "language": language, "body": None, "status": OutboxStatus.PENDING.value, "attempts": 0,
              "next_attempt_at": now, "created_at": now, "thread_id": thread_id}
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


def claim_due(
    session: Session, *, channel: str, now: datetime, limit: int = 50
) -> list[OutboxMessage]:
    """Lease due rows to this sender; an expired lease (a crashed sender) makes a row due again."""
    # Two index searches (ix_outbox_due: status, channel, next_attempt_at) joined, not one OR:
    # for the OR SQLite took the channel's index and read every row the channel ever had, sent
    # ones too, on each claim (13 ms at 2,400 rows, growing with the table until retention).
    pending = select(col(OutboxMessage.id)).where(
        OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.channel == channel,
        col(OutboxMessage.next_attempt_at) <= now)
    lapsed = select(col(OutboxMessage.id)).where(
        OutboxMessage.status == OutboxStatus.SENDING, OutboxMessage.channel == channel,
        col(OutboxMessage.lease_until) <= now)
    due = (
        select(OutboxMessage)
        .where(col(OutboxMessage.id).in_(sa.union_all(pending, lapsed)))
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


def _sent(now: datetime, external_id: str | None) -> dict[str, Any]:
    # The body goes: the clear code must not outlive its delivery.
    return {"status": OutboxStatus.SENT, "sent_at": now, "body": None, "lease_until": None, "last_error": None,
            "external_id": external_id}


def _retry(attempts: int, now: datetime, error: str, delay: timedelta | None, *, defect: bool = False
           ) -> dict[str, Any]:
    if attempts >= MAX_ATTEMPTS:
        return _failed(now, f"gave up after {attempts} attempts: {error}")
    backoff = delay or timedelta(seconds=min(3600, 10 * 2 ** max(0, attempts - 1)))
    if defect:
        backoff = defect_backoff(attempts, backoff)
    return {"status": OutboxStatus.PENDING, "next_attempt_at": now + backoff, "lease_until": None,
            "last_error": error[:2000]}


def _failed(now: datetime, error: str) -> dict[str, Any]:
    return {"status": OutboxStatus.FAILED, "lease_until": None, "body": None, "last_error": error[:2000],
            "next_attempt_at": now}


def _apply(row: OutboxMessage, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(row, name, value)


def mark_sent(row: OutboxMessage, now: datetime, external_id: str | None = None) -> None:
    _apply(row, _sent(now, external_id))


def mark_retry(row: OutboxMessage, now: datetime, error: str, delay: timedelta | None = None) -> None:
    """A temporary failure: back off exponentially; past MAX_ATTEMPTS it becomes permanent."""
    _apply(row, _retry(row.attempts, now, error, delay))


def mark_failed(row: OutboxMessage, now: datetime, error: str) -> None:
    """A permanent failure: kept (body wiped) and shown to staff, never retried."""
    _apply(row, _failed(now, error))


@dataclass(frozen=True)
class DeliveryResult:
    """What a sender reports for one message."""

    ok: bool
    external_id: str | None = None
    error: str | None = None
    permanent: bool = False
    retry_after: timedelta | None = None
    # False: the sender did not try (the row waits its turn behind an older one to the same
    # recipient); the claim's attempt is given back, so waiting never uses up MAX_ATTEMPTS.
    attempted: bool = True
    # The error's class when `error` does not start with it (e.g. "SMTPResponseException").
    error_class: str | None = None
    # Permanent by the recipient's own choice (a student blocked the bot): logged, no one's error.
    recipient_refused: bool = False
    # The sender raised what it did not expect (see `attempt`).
    defect: Defect | None = field(default=None, compare=False)


Deliver = Callable[[OutboxMessage, OutgoingMessage], Awaitable[DeliveryResult]]


def claim(engine: Engine, *, channel: str, now: datetime, limit: int = 50) -> list[OutboxMessage]:
    """`claim_due` in a transaction of its own, committed: the leases hold before any sending."""
    with Session(engine, expire_on_commit=False) as session:
        rows = claim_due(session, channel=channel, now=now, limit=limit)
        session.commit()
    return rows


def _own_lease(row: OutboxMessage) -> Any:
    """The row as this claimer leased it: a later claim (another drainer's) counted one more attempt."""
    return sa.and_(_TABLE.c.id == row.id, _TABLE.c.status == OutboxStatus.SENDING.value,
                   _TABLE.c.attempts == row.attempts)


def release(engine: Engine, rows: list[OutboxMessage]) -> None:
    """Give claimed rows that were never attempted back to the outbox, due at once.

    Only rows still under this claimer's lease: one that ran out and was claimed again
    belongs to the new claimer, which may be sending it right now.
    """
    if not rows:
        return
    with Session(engine) as session:
        lock_for_write(session)
        for row in rows:
            session.execute(
                sa.update(_TABLE).where(_own_lease(row))
                .values(status=OutboxStatus.PENDING.value, lease_until=None, attempts=row.attempts - 1)
            )
        session.commit()


def lease_is_fresh(row: OutboxMessage, now: datetime) -> bool:
    """Taken less than TRUST_FRESH_LEASE ago by this claimer: it holds, no need to ask the database."""
    assert row.lease_until is not None, "for claimed rows"
    return row.lease_until - now > LEASE - min(TRUST_FRESH_LEASE, LEASE / 10)


def still_leased(engine: Engine, row: OutboxMessage, now: datetime) -> bool:
    """Whether this claimer may attempt the row now: its lease holds, and is renewed if not fresh.

    A lease taken less than TRUST_FRESH_LEASE ago holds without a look at the database.
    An older one is renewed only if it has not run out (a lapsed lease may have been taken
    by another drainer meanwhile, or will be: the row is theirs then, not attempted here).
    """
    if lease_is_fresh(row, now):
        return True
    renewed = now + LEASE
    with Session(engine) as session:
        lock_for_write(session)
        result = session.execute(
            sa.update(_TABLE).where(_own_lease(row), _TABLE.c.lease_until > now).values(lease_until=renewed)
        )
        session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        log.info("outbox row %s: lease ran out before its attempt; left to the drainer holding it now", row.id)
        return False
    row.lease_until = renewed
    return True


async def attempt(box: SecretBox, row: OutboxMessage, deliver: Deliver) -> DeliveryResult:
    """Open a claimed row's body and hand it to the sender; any failure becomes a result."""
    try:
        message = open_body(box, row)
    except Exception as exc:  # undecryptable: the secret changed; retrying cannot help
        return DeliveryResult(ok=False, error=f"cannot open body: {exc}", permanent=True)
    try:
        return await deliver(row, message)
    except TRANSPORT_ERRORS as exc:
        return DeliveryResult(ok=False, error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        return DeliveryResult(ok=False, error=f"{type(exc).__name__}: {exc}", defect=defect_of(exc))


def _outcome(row: OutboxMessage, result: DeliveryResult, now: datetime) -> dict[str, Any]:
    if result.ok:
        return _sent(now, result.external_id)
    if result.permanent:
        return _failed(now, result.error or "permanent failure")
    if not result.attempted:
        return {**_retry(0, now, result.error or "waiting", result.retry_after), "attempts": row.attempts - 1}
    return _retry(row.attempts, now, result.error or "temporary failure", result.retry_after,
                  defect=result.defect is not None)


def record(engine: Engine, row: OutboxMessage, result: DeliveryResult, now: datetime,
           report: FailureReporter | None = None) -> bool:
    """Record one delivery's outcome in its own commit, over this claimer's own lease only.

    False when the row is gone or no longer this claimer's (its lease ran out and another
    drainer claimed it, or it was cancelled meanwhile): then the row is left as it is, to
    whoever holds it now; overwriting it could undo their "sent" and send it once more.
    A failed attempt that was recorded is reported (logged) once, by `report`.
    """
    outcome = _outcome(row, result, now)
    with engine.connect() as connection:  # a connection, not a Session: one statement, on every delivery
        lock_for_write(connection)
        # One conditional UPDATE: the check and the write cannot be split by another drainer.
        done = connection.execute(sa.update(_TABLE).where(_own_lease(row)).values(outcome))
        connection.commit()
    if done.rowcount != 1:  # type: ignore[attr-defined]
        log.warning("outbox row %s: outcome (%s) of attempt %s not recorded: the row is no longer under this "
                    "drainer's lease (taken over after the lease ran out, or cancelled); left as it is", row.id,
                    "sent" if result.ok else "not sent", row.attempts)
        return False
    if not result.ok:
        gave_up = outcome["status"] == OutboxStatus.FAILED
        (report or _DEFAULT_REPORTER)(row, result, now, gave_up=gave_up,
                                      next_attempt_at=None if gave_up else outcome.get("next_attempt_at"))
    return True


async def drain_once(
    engine: Engine,
    box: SecretBox,
    *,
    channel: str,
    now: Callable[[], datetime],
    deliver: Deliver,
    limit: int = 50,
    report: FailureReporter | None = None,
) -> int:
    """Claim due rows (committed), deliver each while its lease holds, record each outcome in its own commit."""
    delivered = 0
    for row in claim(engine, channel=channel, now=now(), limit=limit):
        if not still_leased(engine, row, now()):
            continue
        result = await attempt(box, row, deliver)
        record(engine, row, result, now(), report)
        delivered += int(result.ok)
    return delivered
