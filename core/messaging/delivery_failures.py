"""Failed deliveries said out loud: each failed attempt logged, a row that keeps failing raised, defects shown.

The outbox retries a failed delivery on its own; this module makes sure nobody has to
look into the database to learn that it happens:
- every failed attempt is one WARNING line (row id, channel, kind, attempt, the error's
  class and message, masked as every log line is);
- a row failing `error_after_attempts` attempts in a row, or given up, is one ERROR line
  with what a person should do, and the reporter's `on_error` hook is called (alerts,
  core.messaging.delivery_alerts); a row refused by its recipient's own choice (a student who
  blocked the bot) is no one's error;
- an exception a sender did not expect (not a transport error it knows) is a defect:
  its traceback is logged once per kind of failure (type and place) in this process,
  and the outbox retries the row at a slow pace (`defect_backoff`), not a network error's.

`failing` and `given_up` read the same facts back for `mleg status` and the alerts.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.app.logging_setup import redact_log_text
from core.storage.models import OutboxMessage, OutboxStatus

if TYPE_CHECKING:
    from core.messaging.sending import DeliveryResult

__all__ = [
    "DEFAULT_ERROR_AFTER_ATTEMPTS",
    "Defect",
    "FailingDeliveries",
    "FailureReporter",
    "defect_backoff",
    "defect_of",
    "failing",
    "given_up",
]

log = logging.getLogger(__name__)

DEFAULT_ERROR_AFTER_ATTEMPTS = 4
# A defect does not go away by itself in seconds; retrying it at a network error's pace
# (10 s, 20 s, ...) only fills the log. Two minutes, doubling, at most six hours.
DEFECT_FIRST_RETRY = timedelta(minutes=2)
DEFECT_MAX_RETRY = timedelta(hours=6)
# How many kinds of defect this process remembers having shown the traceback of.
_MAX_REMEMBERED = 1000

# What a person should do, by channel (the log is read by operators).
_ADVICE = {
    "email": ("check the SMTP server and its settings (MLEG_SMTP__HOST, __PORT, __SECURITY, __USERNAME, "
              "__PASSWORD); a 5xx refusal of one address means that address is wrong (the register's e-mail)"),
    "staff": ("the staff room cannot be reached: check that the bot is still a member of the group "
              "MLEG_TELEGRAM__STAFF_CHAT_ID and may post there, and that the Bot API is reachable; "
              "escalations wait in the outbox and go out once it works"),
    "telegram": "check that the Bot API is reachable and MLEG_TELEGRAM__TOKEN is valid",
}
_DEFECT_ADVICE = ("an unexpected exception in the sender is a defect of mleg, not a delivery problem: report it "
                  "with the traceback logged once for it; the row is retried every few minutes to hours meanwhile")


@dataclass(frozen=True)
class Defect:
    """An exception a sender did not expect: what kind it is, and its (masked) traceback."""

    signature: str
    traceback: str


def defect_of(exc: BaseException) -> Defect:
    """Its kind is its type and the place it was raised: the same bug hit by many rows is one kind."""
    frames = traceback.extract_tb(exc.__traceback__)
    place = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    kind = type(exc)
    text = "".join(traceback.format_exception(exc)).rstrip()
    # The exception's message may quote what a student typed: masked like every log line,
    # here because a traceback passed as exc_info would bypass the log's redacting filter.
    return Defect(signature=f"{kind.__module__}.{kind.__qualname__}@{place}", traceback=redact_log_text(text))


def defect_backoff(attempts: int, network_backoff: timedelta) -> timedelta:
    slow = DEFECT_FIRST_RETRY * 2 ** max(0, attempts - 1)
    return max(network_backoff, min(slow, DEFECT_MAX_RETRY))


def _error_line(result: DeliveryResult) -> str:
    error = result.error or "failure"
    if result.error_class and not error.startswith(result.error_class):
        error = f"{result.error_class}: {error}"
    return redact_log_text(error)


class FailureReporter:
    """Logs one failed attempt (core.messaging.sending.record calls it once its outcome is recorded)."""

    def __init__(self, error_after_attempts: int = DEFAULT_ERROR_AFTER_ATTEMPTS,
                 on_error: Callable[[OutboxMessage, DeliveryResult, datetime], None] | None = None) -> None:
        self.error_after_attempts = error_after_attempts
        self.on_error = on_error

    def __call__(self, row: OutboxMessage, result: DeliveryResult, now: datetime, *,
                 gave_up: bool, next_attempt_at: datetime | None) -> None:
        if result.ok or not result.attempted:
            return  # waiting behind an older row is no failed attempt
        error = _error_line(result)
        if result.defect is not None and _first_time(result.defect.signature):
            log.error("unexpected exception in the %s sender (a defect; its traceback is shown once for this kind "
                      "of failure), outbox row %s, kind %s:\n%s", row.channel, row.id, row.kind,
                      result.defect.traceback)
        then = "given up" if gave_up else (
            f"next attempt at {next_attempt_at:%Y-%m-%d %H:%M:%S} UTC" if next_attempt_at else "retried")
        log.warning("delivery failed: outbox row %s, channel %s, kind %s, attempt %s: %s (%s%s)", row.id,
                    row.channel, row.kind, row.attempts, error, then,
                    ", a defect" if result.defect is not None else "")
        if result.recipient_refused:
            return  # the recipient's choice (a student blocked the bot): nothing for anyone to fix
        advice = _DEFECT_ADVICE if result.defect is not None else _ADVICE.get(
            row.channel, f"check the {row.channel} channel's settings and server")
        if gave_up:
            log.error("delivery given up: outbox row %s, channel %s, kind %s, after %s attempt(s): %s. This message "
                      "will not be sent. What to do: %s; `mleg status` lists the failing deliveries", row.id,
                      row.channel, row.kind, row.attempts, error, advice)
        elif row.attempts == self.error_after_attempts:
            log.error("delivery keeps failing: outbox row %s, channel %s, kind %s, %s attempts so far: %s. It is "
                      "retried; what to do: %s; `mleg status` lists the failing deliveries", row.id, row.channel,
                      row.kind, row.attempts, error, advice)
        else:
            return
        if self.on_error is not None:
            try:
                self.on_error(row, result, now)
            except Exception:
                # The alert is extra; the failure itself is recorded and logged already.
                log.exception("could not queue the alert about outbox row %s", row.id)


_seen: set[str] = set()
_seen_lock = threading.Lock()


def _first_time(signature: str) -> bool:
    with _seen_lock:
        if signature in _seen:
            return False
        if len(_seen) >= _MAX_REMEMBERED:
            _seen.clear()
        _seen.add(signature)
        return True


# --- reading it back ------------------------------------------------------------------------

@dataclass(frozen=True)
class FailingDeliveries:
    """The rows of one channel and kind that failed: how many, since when, the newest one's error."""

    channel: str
    kind: str
    count: int
    oldest: datetime
    last_error: str

    def as_json(self) -> dict[str, object]:
        return {"channel": self.channel, "kind": self.kind, "count": self.count,
                "oldest": self.oldest.isoformat(), "last_error": self.last_error}


def _grouped(session: Session, condition: sa.ColumnElement[bool], since_column: Any) -> list[FailingDeliveries]:
    groups = session.execute(
        sa.select(col(OutboxMessage.channel), col(OutboxMessage.kind), sa.func.count(), sa.func.min(since_column),
                  sa.func.max(col(OutboxMessage.id)))
        .where(condition).group_by(col(OutboxMessage.channel), col(OutboxMessage.kind))
        .order_by(col(OutboxMessage.channel), col(OutboxMessage.kind))
    ).all()
    result = []
    for channel, kind, count, oldest, newest_id in groups:
        error = session.exec(select(OutboxMessage.last_error).where(OutboxMessage.id == newest_id)).first()
        # A transport's error may quote an address or what the student typed.
        result.append(FailingDeliveries(channel, kind, int(count), oldest,
                                        redact_log_text(error or "")[:300]))
    return result


def failing(session: Session, *, channel: str | None = None) -> list[FailingDeliveries]:
    """Rows still to be sent that failed at least once (oldest = queued at), by channel and kind."""
    condition = sa.and_(
        col(OutboxMessage.status).in_([OutboxStatus.PENDING, OutboxStatus.SENDING]),
        col(OutboxMessage.attempts) > 0, col(OutboxMessage.last_error).is_not(None),
    )
    if channel is not None:
        condition = sa.and_(condition, col(OutboxMessage.channel) == channel)
    return _grouped(session, condition, col(OutboxMessage.created_at))


def given_up(session: Session, *, since: datetime) -> list[FailingDeliveries]:
    """Rows given up since `since` after at least one attempt (oldest = the first given up)."""
    # A given-up row's next_attempt_at is the moment it was given up (core.messaging.sending._failed).
    condition = sa.and_(col(OutboxMessage.status) == OutboxStatus.FAILED, col(OutboxMessage.attempts) > 0,
                        col(OutboxMessage.next_attempt_at) >= since)
    return _grouped(session, condition, col(OutboxMessage.next_attempt_at))
