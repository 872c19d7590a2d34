"""The "telegram" outbox channel (replies, reminders and staff answers to students) and the factories.

Entry points `mleg.channels`: `telegram = bot.channel:make_telegram_channel` and
`staff = bot.channel:make_staff_channel`. Both return None when Telegram is not
configured, and both send through the Bot of `bot.runtime`, shared with the front-end.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import sqlalchemy as sa
from sqlmodel import Session, col
from telegram.error import TelegramError

from bot.delivery import ChatTarget, Delivery, transport_failure
from bot.runtime import RuntimeUser
from bot.staff_room import StaffSender
from core.app.context import AppContext
from core.messaging.outgoing import OutgoingMessage
from core.messaging.sending import DeliveryResult
from core.storage.db import unit_of_work
from core.storage.models import ChatLink, OutboxMessage, OutboxStatus
from core.support import answers
from core.support import threads as support

__all__ = ["CHANNEL", "TelegramSender", "chat_blocked", "chat_came_back", "make_staff_channel",
           "make_telegram_channel"]

log = logging.getLogger(__name__)
CHANNEL = "telegram"


def _set_blocked(ctx: AppContext, session: Session, account_id: str, *, blocked: bool) -> None:
    """Jobs skip a blocked link; only a change is written, so the first block's time stays."""
    blocked_at = col(ChatLink.blocked_at)
    condition = blocked_at.is_(None) if blocked else blocked_at.is_not(None)
    session.execute(
        sa.update(ChatLink)
        .where(col(ChatLink.channel) == CHANNEL, col(ChatLink.account_id) == account_id, condition)
        .values(blocked_at=ctx.clock.now() if blocked else None)
    )


def chat_blocked(ctx: AppContext, account_id: str) -> None:
    """The student blocked the bot (a 403, or a my_chat_member update "kicked")."""
    with unit_of_work(ctx.engine) as session:
        _set_blocked(ctx, session, account_id, blocked=True)


def chat_came_back(ctx: AppContext, account_id: str) -> int:
    """The student unblocked the bot or wrote again: clear the mark and send the answers held
    for them. Returns how many answers were queued again (the caller wakes the drainers)."""
    with unit_of_work(ctx.engine) as session:
        _set_blocked(ctx, session, account_id, blocked=False)
        return len(answers.resend_held_answers(ctx, session, channel=CHANNEL, account_id=account_id))


_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
_LINK = ChatLink.__table__  # type: ignore[attr-defined]
# Whether the student was away: the chat marked as blocking us, or (a chat bound to no student
# has no link to mark) an answer held for it. One statement: it runs before every delivery.
_AWAY = sa.select(sa.or_(
    sa.exists().where(_LINK.c.channel == CHANNEL, _LINK.c.account_id == sa.bindparam("recipient"),
                      _LINK.c.blocked_at.is_not(None)),
    sa.exists().where(_OUTBOX.c.channel == CHANNEL, _OUTBOX.c.recipient == sa.bindparam("recipient"),
                      _OUTBOX.c.kind == answers.ANSWER_KIND, _OUTBOX.c.status == OutboxStatus.FAILED.value,
                      _OUTBOX.c.last_error.contains(answers.HELD_NOTE)),
))


class TelegramSender(RuntimeUser):
    """Delivers outbox rows of channel "telegram"; the recipient is the student's chat id."""

    channel = CHANNEL
    # Chats are independent: core.app.serve drains this many chats at once (each chat's rows in
    # order); the shared AIORateLimiter keeps the overall rate, Delivery the per-chat one.
    # Eight requests in flight reach Telegram's 30/s even at 250 ms a round trip; more only
    # adds thread and lock churn (bench.chat_throughput: 32 was slower than 4, and 4 than 1,
    # on a loopback stand-in that answers in a millisecond).
    concurrent_deliveries = 8

    def __init__(self, ctx: AppContext) -> None:
        super().__init__(ctx)
        self.rate_per_second = ctx.settings.telegram.messages_per_second
        self.delivery = Delivery(ctx, CHANNEL)

    async def deliver(self, row: OutboxMessage, message: OutgoingMessage) -> DeliveryResult:
        # Database calls on the database thread(s): waiting for SQLite's write lock must not stall the loop.
        older, away = await self.ctx.in_database(self._before_sending, row)
        if older is not None:
            return self.delivery.wait_behind(older)
        try:
            chat_id = int(row.recipient)
        except ValueError:
            return DeliveryResult(ok=False, permanent=True, error="recipient is not a Telegram chat id")
        try:
            runtime = await self.ready()
        except TelegramError as exc:  # the Bot API away while the Bot starts
            return transport_failure(exc)
        result = await self.delivery.send(runtime.bot, row, message, ChatTarget(chat_id))
        if result.permanent and (result.error or "").startswith("Forbidden"):
            # The student's own choice: logged, but nothing for an operator to fix.
            result = replace(result, recipient_refused=True)
            annotation = await self.ctx.in_database(self._refused, row, result.error or "Forbidden")
            log.info("telegram chat blocked the bot; outbox row %s not retried", row.id)
            if annotation is not None:
                # Staff read the row's error in `mleg threads show`: it says where the answer went.
                for channel in (support.STAFF_CHANNEL, support.EMAIL_CHANNEL):
                    self.ctx.outbox_changed(channel)
                return replace(result, error=f"{result.error}; {annotation}")
        elif result.ok and away:
            resent = await self.ctx.in_database(chat_came_back, self.ctx, row.recipient)
            for channel in (CHANNEL, support.STAFF_CHANNEL) if resent else ():
                self.ctx.outbox_changed(channel)
        return result

    def _before_sending(self, row: OutboxMessage) -> tuple[OutboxMessage | None, bool]:
        """(an older row this one must wait behind, whether the student was away: the chat is
        marked as blocking us, or an answer is held for it; then a delivery means they are back)."""
        # A connection and Core statements, no ORM session: this runs before every delivery.
        with self.ctx.engine.connect() as connection:
            older = self.delivery.older_row_waiting(row, connection)
            if older is not None:
                return older, False
            away = bool(connection.execute(_AWAY, {"recipient": row.recipient}).scalar())
        return None, away

    def _refused(self, row: OutboxMessage, error: str) -> str | None:
        """Forbidden: mark the chat blocked and, for a staff answer, tell staff and reroute or hold it
        (core.support.answers.answer_undelivered); one commit, so a crash redoes both or neither."""
        reason = error.removeprefix("Forbidden:").strip()
        with unit_of_work(self.ctx.engine) as session:
            _set_blocked(self.ctx, session, row.recipient, blocked=True)
            return answers.answer_undelivered(self.ctx, session, row, reason=reason)


def make_telegram_channel(ctx: AppContext) -> TelegramSender | None:
    if not ctx.settings.telegram.token:
        return None
    return TelegramSender(ctx)


def make_staff_channel(ctx: AppContext) -> StaffSender | None:
    if not ctx.settings.telegram.token or ctx.settings.telegram.staff_chat_id is None:
        return None
    return StaffSender(ctx)
