"""Alerts about deliveries that keep failing: the staff room about e-mail, the operators about the staff room.

Called when a row's failure reaches ERROR (core.messaging.delivery_failures): it keeps failing or was
given up.
- E-mail to students failing: the staff room is told, so the help desk knows students
  are not getting their mail.
- The staff room failing (escalations, or this very alert): the operators' address
  (`MLEG_OPERATIONS__ALERT_EMAIL`) is told by e-mail.
Each alert is an outbox row like any other message, at most one of each sort per
`alert_interval_minutes` (the newest alert row is looked up; its idempotency key, one per
interval, keeps two servers from queuing it twice at once). The operators' own alert
failing raises nothing more, so a broken mail server and a broken staff room cannot feed
each other alerts forever: e-mail failing → staff room told → staff room failing →
operators e-mailed → that mail failing → the log only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.app.logging_setup import redact_log_text
from core.messaging import outbox
from core.messaging.delivery_failures import FailingDeliveries, FailureReporter, failing
from core.messaging.outgoing import OutgoingMessage
from core.messaging.sending import DeliveryResult
from core.storage.db import unit_of_work
from core.storage.models import OutboxMessage
from core.support.threads import EMAIL_CHANNEL, STAFF_CHANNEL

__all__ = ["OPERATORS_ALERT_KIND", "STAFF_ALERT_KIND", "alert_on_error", "reporter_for"]

log = logging.getLogger(__name__)
STAFF_ALERT_KIND = "delivery-alert"
OPERATORS_ALERT_KIND = "operations-alert"


def reporter_for(ctx: AppContext) -> FailureReporter:
    """The failure reporter of a running server: the settings' threshold, alerts on ERROR."""
    return FailureReporter(ctx.settings.operations.error_after_attempts,
                           on_error=functools.partial(alert_on_error, ctx))


def alert_on_error(ctx: AppContext, row: OutboxMessage, result: DeliveryResult, now: datetime) -> None:
    if row.kind == OPERATORS_ALERT_KIND:
        return  # the last resort failed: the ERROR line in the log is all that is left
    if row.channel == EMAIL_CHANNEL:
        _tell_staff_room(ctx, row, result, now)
    elif row.channel == STAFF_CHANNEL:
        _tell_operators(ctx, row, result, now)


def _summary(groups: list[FailingDeliveries], row: OutboxMessage, result: DeliveryResult
             ) -> tuple[int, datetime, str]:
    """How many are failing and since when (the row itself if it was given up), and its error: the newest."""
    error = redact_log_text(result.error or "")[:300]
    if not groups:
        return 1, row.created_at, error
    return sum(g.count for g in groups), min(g.oldest for g in groups), error


def _recently_alerted(session: Session, channel: str, kind: str, since: datetime) -> bool:
    return session.exec(
        select(OutboxMessage.id).where(OutboxMessage.channel == channel, OutboxMessage.kind == kind,
                                       col(OutboxMessage.created_at) > since).limit(1)
    ).first() is not None


def _queue(ctx: AppContext, *, channel: str, recipient: str, kind: str, now: datetime, what: str,
           compose: Callable[[Session], OutgoingMessage]) -> bool:
    """Queue the alert unless one of its sort went out within the interval; True if queued."""
    interval = timedelta(minutes=ctx.settings.operations.alert_interval_minutes)
    slot = int(now.timestamp() // interval.total_seconds())
    with unit_of_work(ctx.engine) as session:
        if _recently_alerted(session, channel, kind, now - interval):
            log.info("%s: one was queued less than %s ago; not again", what, interval)
            return False
        message = compose(session)
        outbox.enqueue(session, ctx.box, key=f"alert:{kind}:{channel}:{slot}", channel=channel, recipient=recipient,
                       kind=kind, message=message, now=now, language=ctx.settings.default_language)
    log.warning("%s queued", what)
    ctx.outbox_changed(channel)
    return True


def _tell_staff_room(ctx: AppContext, row: OutboxMessage, result: DeliveryResult, now: datetime) -> None:
    telegram = ctx.settings.telegram
    if not telegram.token or telegram.staff_chat_id is None:
        return  # no staff room: the ERROR line and `mleg status` say it
    language = ctx.settings.default_language

    def compose(session: Session) -> OutgoingMessage:
        count, oldest, error = _summary(failing(session, channel=EMAIL_CHANNEL), row, result)
        return OutgoingMessage(text=ctx.catalog.text(
            language, "operations.email_failing", count=count, oldest=f"{oldest:%Y-%m-%d %H:%M} UTC", error=error,
            interval=ctx.settings.operations.alert_interval_minutes))

    _queue(ctx, channel=STAFF_CHANNEL, recipient=str(telegram.staff_chat_id), kind=STAFF_ALERT_KIND, now=now,
           what="alert to the staff room (e-mail to students failing)", compose=compose)


def _tell_operators(ctx: AppContext, row: OutboxMessage, result: DeliveryResult, now: datetime) -> None:
    address = ctx.settings.operations.alert_email
    if address is None:
        log.warning("the staff room cannot be reached and MLEG_OPERATIONS__ALERT_EMAIL is not set: "
                    "no one is e-mailed about it")
        return
    language = ctx.settings.default_language

    def compose(session: Session) -> OutgoingMessage:
        count, oldest, error = _summary(failing(session, channel=STAFF_CHANNEL), row, result)
        return OutgoingMessage(
            subject=ctx.catalog.text(language, "operations.staff_unreachable_subject",
                                     university=ctx.settings.university.name),
            text=ctx.catalog.text(language, "operations.staff_unreachable", count=count,
                                  oldest=f"{oldest:%Y-%m-%d %H:%M} UTC", error=error,
                                  chat=ctx.settings.telegram.staff_chat_id,
                                  interval=ctx.settings.operations.alert_interval_minutes),
            auto_submitted="auto-generated",
        )

    _queue(ctx, channel=EMAIL_CHANNEL, recipient=address, kind=OPERATORS_ALERT_KIND, now=now,
           what="alert to the operators (MLEG_OPERATIONS__ALERT_EMAIL: the staff room cannot be reached)",
           compose=compose)
