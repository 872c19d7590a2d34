"""The "telegram" outbox channel (replies, reminders and staff answers to students) and the factories.

Entry points `mleg.channels`: `telegram = bot.channel:make_telegram_channel` and
`staff = bot.channel:make_staff_channel`. Both return None when Telegram is not
configured, and both send through the Bot of `bot.runtime`, shared with the front-end.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.delivery import ChatTarget, Delivery
from bot.runtime import RuntimeUser
from bot.staff_room import StaffSender
from core.context import AppContext
from core.models import ChatLink, OutboxMessage
from core.outbox import DeliveryResult
from core.outgoing import OutgoingMessage

__all__ = ["CHANNEL", "TelegramSender", "make_staff_channel", "make_telegram_channel"]

log = logging.getLogger(__name__)
CHANNEL = "telegram"


class TelegramSender(RuntimeUser):
    """Delivers outbox rows of channel "telegram"; the recipient is the student's chat id."""

    channel = CHANNEL
    # Chats are independent: core.serve drains this many chats at once (each chat's rows in
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
        older, blocked = await self.ctx.in_database(self._before_sending, row)
        if older is not None:
            return self.delivery.wait_behind(older)
        try:
            chat_id = int(row.recipient)
        except ValueError:
            return DeliveryResult(ok=False, permanent=True, error="recipient is not a Telegram chat id")
        runtime = await self.ready()
        result = await self.delivery.send(runtime.bot, row, message, ChatTarget(chat_id))
        if result.permanent and (result.error or "").startswith("Forbidden"):
            await self.ctx.in_database(self._mark_blocked, row.recipient, blocked=True)
            log.info("telegram chat blocked the bot; outbox row %s not retried", row.id)
        elif result.ok and blocked:
            await self.ctx.in_database(self._mark_blocked, row.recipient, blocked=False)
        return result

    def _before_sending(self, row: OutboxMessage) -> tuple[OutboxMessage | None, bool]:
        """(an older row this one must wait behind, whether the chat is marked as blocking us)."""
        with Session(self.ctx.engine) as session:
            older = self.delivery.older_row_waiting(row, session)
            if older is not None:
                return older, False
            blocked = session.exec(select(ChatLink.id).where(
                col(ChatLink.channel) == CHANNEL, col(ChatLink.account_id) == row.recipient,
                col(ChatLink.blocked_at).is_not(None),
            )).first()
        return None, blocked is not None

    def _mark_blocked(self, account_id: str, *, blocked: bool) -> None:
        """Forbidden: the student blocked the bot (jobs skip the link); a delivery: unblocked."""
        blocked_at = col(ChatLink.blocked_at)
        condition = blocked_at.is_(None) if blocked else blocked_at.is_not(None)
        with Session(self.ctx.engine) as session:
            session.execute(
                sa.update(ChatLink)
                .where(col(ChatLink.channel) == CHANNEL, col(ChatLink.account_id) == account_id, condition)
                .values(blocked_at=self.ctx.clock.now() if blocked else None)
            )
            session.commit()


def make_telegram_channel(ctx: AppContext) -> TelegramSender | None:
    if not ctx.settings.telegram.token:
        return None
    return TelegramSender(ctx)


def make_staff_channel(ctx: AppContext) -> StaffSender | None:
    if not ctx.settings.telegram.token or ctx.settings.telegram.staff_chat_id is None:
        return None
    return StaffSender(ctx)
