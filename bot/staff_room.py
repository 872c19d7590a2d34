"""The "staff" outbox channel: escalations and acknowledgements posted into the staff room.

Where the staff group is a forum, each support thread gets its own topic (created with
the first escalation, its id kept on SupportThread.staff_topic_id) and everything about
the thread goes there. Otherwise each escalation is a message with the thread number,
the first one's id kept on SupportThread.staff_message_ref; later notices reply to it.
Every posted message's id is the outbox row's external_id ("chat:message"), which is how
a staff member's reply to any of them finds its thread (bot.staff).

Nothing is posted to a staff chat that is public (has an @username): escalations carry
students' names and questions. The rows wait, and the reason is logged and kept as their
last error, until the chat is made private.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import Session
from telegram.error import BadRequest, Forbidden, TelegramError

from bot.delivery import ChatTarget, Delivery, transport_failure
from bot.runtime import BotRuntime, RuntimeUser
from core.app.context import AppContext
from core.messaging.outgoing import OutgoingMessage
from core.messaging.sending import DeliveryResult
from core.storage.db import unit_of_work
from core.storage.models import OutboxMessage, SupportThread

__all__ = ["STAFF_CHANNEL", "StaffSender"]

log = logging.getLogger(__name__)
STAFF_CHANNEL = "staff"
TOPIC_TITLE_MAX = 128
UNVERIFIED_MARK = "⚠"
# How often a refused (public) staff chat is looked at again.
REFUSED_RETRY = timedelta(minutes=5)


class StaffSender(RuntimeUser):
    """Delivers outbox rows of channel "staff"; the recipient is the staff chat id."""

    channel = STAFF_CHANNEL

    def __init__(self, ctx: AppContext) -> None:
        super().__init__(ctx)
        self.rate_per_second = ctx.settings.telegram.messages_per_second
        self.delivery = Delivery(ctx, STAFF_CHANNEL)
        self._refused: str | None = None  # logged once, not at every retry

    async def deliver(self, row: OutboxMessage, message: OutgoingMessage) -> DeliveryResult:
        older = self.delivery.older_row_waiting(row)
        if older is not None:
            return self.delivery.wait_behind(older)
        try:
            chat_id = int(row.recipient)
        except ValueError:
            return DeliveryResult(ok=False, permanent=True, error="recipient is not a Telegram chat id")
        try:  # the Bot API away while the Bot starts
            runtime = await self.ready()
            refusal = await runtime.staff_chat_refusal()
        except TelegramError as exc:
            return transport_failure(exc)
        if refusal is not None:
            # Not a failure that uses up attempts: once the group is private, the waiting rows go out.
            if refusal != self._refused:
                log.error("%s", refusal)
            self._refused = refusal
            return DeliveryResult(ok=False, error=refusal, attempted=False, retry_after=REFUSED_RETRY)
        self._refused = None
        thread = self._thread(row.thread_id)
        target = ChatTarget(chat_id)
        try:
            if thread is not None:
                target = await self._target_for(runtime, chat_id, thread)
        except TelegramError as exc:  # the Bot API away while a topic is made
            return transport_failure(exc)
        result = await self.delivery.send(runtime.bot, row, message, target)
        if result.ok and thread is not None and target.topic_id is None and not thread.staff_message_ref:
            self._remember(thread.id or 0, message_ref=(result.external_id or "").partition(":")[2] or None)
        if not result.ok and "thread not found" in (result.error or "").lower() and thread is not None:
            # Staff deleted the topic: forget it, the retry opens a new one.
            self._remember(thread.id or 0, topic_id=None, clear_topic=True)
            runtime.forget_forum()
            return DeliveryResult(ok=False, error=result.error)
        return result

    def _thread(self, thread_id: int | None) -> SupportThread | None:
        if thread_id is None:
            return None
        with Session(self.ctx.engine, expire_on_commit=False) as session:
            return session.get(SupportThread, thread_id)

    async def _target_for(self, runtime: BotRuntime, chat_id: int, thread: SupportThread) -> ChatTarget:
        if await runtime.staff_is_forum():
            topic_id = thread.staff_topic_id
            if topic_id is None:
                title = f"#{thread.id} {thread.subject or ''}".strip()
                if thread.sender_verified is False:  # an e-mail whose From the mail server did not prove
                    title = f"{UNVERIFIED_MARK} {title}"
                title = title[:TOPIC_TITLE_MAX]
                try:
                    topic = await runtime.bot.create_forum_topic(chat_id, title)
                except (BadRequest, Forbidden) as exc:
                    # E.g. the bot lacks the "manage topics" right: post in General instead.
                    log.error("cannot create a forum topic for thread %s: %s", thread.id, exc.message)
                    return ChatTarget(chat_id)
                topic_id = topic.message_thread_id
                # Kept at once: a retry of this row must not open a second topic.
                self._remember(thread.id or 0, topic_id=topic_id)
            return ChatTarget(chat_id, topic_id=topic_id)
        ref = thread.staff_message_ref or ""
        reply_to = int(ref) if ref.isdigit() else None
        return ChatTarget(chat_id, reply_to=reply_to)

    def _remember(self, thread_id: int, *, topic_id: int | None = None, message_ref: str | None = None,
                  clear_topic: bool = False) -> None:
        with unit_of_work(self.ctx.engine) as session:
            thread = session.get(SupportThread, thread_id)
            if thread is None:
                return
            if topic_id is not None or clear_topic:
                thread.staff_topic_id = topic_id
            if message_ref is not None:
                thread.staff_message_ref = message_ref
            session.add(thread)
