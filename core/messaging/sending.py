"""Sending the outbox's rows: claimed under a lease, attempted, the outcome recorded.

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
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from core.messaging.delivery_failures import Defect, FailureReporter, defect_backoff, defect_of
from core.messaging.outbox import open_body
from core.messaging.outgoing import OutgoingMessage
from core.security.secrets_box import SecretBox
from core.storage.db import lock_for_write
from core.storage.models import OutboxMessage, OutboxStatus

__all__ = [
    "LEASE",
    "MAX_ATTEMPTS",
    "TRANSPORT_ERRORS",
    "DeliveryResult",
    "attempt",
    "claim",
    "claim_due",
    "drain_once",
    "lease_is_fresh",
    "mark_retry",
    "mark_sent",
    "record",
    "release",
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


async def _inline(work: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    return work(*args, **kwargs)


async def drain_once(
    engine: Engine,
    box: SecretBox,
    *,
    channel: str,
    now: Callable[[], datetime],
    deliver: Deliver,
    limit: int = 50,
    report: FailureReporter | None = None,
    stopping: Callable[[], bool] | None = None,
    in_database: Callable[..., Awaitable[Any]] = _inline,
) -> int:
    """Claim due rows (committed), deliver each while its lease holds, record each outcome in its own commit.

    `stopping`: asked before each row; once true, the rows not attempted are given back (due at
    once) and the drain returns. `in_database` runs the database calls (a server passes its
    database threads, so a wait for SQLite's write lock never stalls the event loop).
    """
    delivered = 0
    rows = await in_database(claim, engine, channel=channel, now=now(), limit=limit)
    for index, row in enumerate(rows):
        if stopping is not None and stopping():
            await in_database(release, engine, rows[index:])
            break
        if not await in_database(still_leased, engine, row, now()):
            continue
        result = await attempt(box, row, deliver)
        await in_database(record, engine, row, result, now(), report)
        delivered += int(result.ok)
    return delivered
