"""Sending one outbox message to one Telegram chat, and turning Telegram's answers into outcomes.

Shared by the student channel ("telegram") and the staff room ("staff"). Telegram has no
idempotency key, so the sender itself guards against doubles and disorder:
- a message longer than 4096 is sent in parts; the parts already sent are remembered, so
  a retry after a 429 in the middle continues instead of repeating;
- a row waits while an older row to the same chat is still pending (its retry), so the
  replies of one turn arrive in order even when one of them was rate-limited; waiting is
  no failed attempt (it uses none of the row's attempts);
- at most `messages_per_chat_per_second` to one chat (Telegram: about one a second).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session
from telegram import Bot, InputFile
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from bot.render import MAX_CAPTION, escape, keyboard, split_for_telegram
from core.app.context import AppContext
from core.messaging.outgoing import OutgoingMessage
from core.messaging.sending import DeliveryResult
from core.storage.models import OutboxMessage, OutboxStatus

__all__ = ["ChatTarget", "Delivery", "retry_seconds", "transport_failure"]

log = logging.getLogger(__name__)
ORDER_GAP = timedelta(milliseconds=50)
# How soon a row behind an older one that is being sent (by another server: this one sends
# a chat's rows in one chain) looks again. Not the older row's lease end: that is minutes
# away, and the older row is usually sent within a second.
SENDING_RECHECK = timedelta(seconds=2)


_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
_OLDER_WAITING = (
    sa.select(_OUTBOX.c.id, _OUTBOX.c.status, _OUTBOX.c.next_attempt_at, _OUTBOX.c.lease_until)
    .where(_OUTBOX.c.channel == sa.bindparam("channel"), _OUTBOX.c.recipient == sa.bindparam("recipient"),
           _OUTBOX.c.id < sa.bindparam("row_id"),
           _OUTBOX.c.status.in_([OutboxStatus.PENDING.value, OutboxStatus.SENDING.value]))
    .order_by(sa.desc(_OUTBOX.c.next_attempt_at)).limit(1)
)


@dataclass(frozen=True)
class ChatTarget:
    """Where a message goes: a chat, maybe a forum topic, maybe as a reply."""

    chat_id: int
    topic_id: int | None = None
    reply_to: int | None = None


def retry_seconds(exc: RetryAfter) -> float:
    value: Any = exc.retry_after  # an int in v22, a timedelta later; accept both
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def transport_failure(exc: TelegramError) -> DeliveryResult:
    """A Telegram error met outside `Delivery.send` (starting the Bot, a lookup before sending): retried,
    at Telegram's pace after a flood wait. Not a defect: the Bot API was away or said no for now."""
    if isinstance(exc, RetryAfter):
        seconds = retry_seconds(exc)
        return DeliveryResult(ok=False, retry_after=timedelta(seconds=seconds), error=f"RetryAfter {seconds:.0f}s")
    return DeliveryResult(ok=False, error=f"{type(exc).__name__}: {exc.message}")


class Delivery:
    """Sends messages for one channel through the shared Bot; outcomes as DeliveryResult."""

    def __init__(self, ctx: AppContext, channel: str) -> None:
        self.ctx = ctx
        self.channel = channel
        self._parts_done: dict[int, list[int]] = {}
        self._last_sent: dict[int, float] = {}
        rate = ctx.settings.telegram.messages_per_chat_per_second
        self._chat_gap = 1.0 / rate if rate > 0 else 0.0

    def older_row_waiting(self, row: OutboxMessage, session: Session | Connection | None = None
                          ) -> OutboxMessage | None:
        """An older undelivered row to the same chat: this one must wait behind it.

        A Core statement of the four columns `wait_behind` reads: it runs before every
        delivery, and loading a whole ORM row cost more than the search.
        """
        if session is None:
            with self.ctx.engine.connect() as connection:
                return self.older_row_waiting(row, connection)
        found = session.execute(_OLDER_WAITING, {"channel": self.channel, "recipient": row.recipient,
                                                 "row_id": row.id or 0}).first()
        if found is None:
            return None
        row_id, status, next_attempt_at, lease_until = found
        return OutboxMessage(id=row_id, channel=self.channel, recipient=row.recipient, status=status,
                             next_attempt_at=next_attempt_at, lease_until=lease_until)

    def wait_behind(self, older: OutboxMessage) -> DeliveryResult:
        now = self.ctx.clock.now()
        if older.status == OutboxStatus.SENDING:
            # In flight elsewhere; its lease end only bounds the wait (a dead sender's row is due then).
            lease_left = older.lease_until - now if older.lease_until else SENDING_RECHECK
            delay = min(SENDING_RECHECK, max(timedelta(0), lease_left))
        else:
            delay = max(timedelta(0), older.next_attempt_at - now)
        return DeliveryResult(ok=False, retry_after=delay + ORDER_GAP, attempted=False,
                              error=f"waiting behind outbox row {older.id}")

    @asynccontextmanager
    async def _paced(self, chat_id: int) -> AsyncIterator[None]:
        """One request into a chat, at least the per-chat gap after the previous one was answered.

        Telegram counts a chat's messages as they arrive; the previous one arrived before its
        answer did, so a gap counted from the answer holds at Telegram's end too. Counted from
        the start of the previous request, a slow first request made a short gap (a 429).
        """
        last = self._last_sent.get(chat_id)
        if last is not None:
            wait = self._chat_gap - (time.monotonic() - last)
            if wait > 0:
                await asyncio.sleep(wait)
        try:
            yield
        finally:
            self._last_sent[chat_id] = time.monotonic()

    async def send(self, bot: Bot, row: OutboxMessage, message: OutgoingMessage, target: ChatTarget) -> DeliveryResult:
        """Send all parts (text, then attachments); on failure say whether to retry."""
        row_id = row.id or 0
        done = self._parts_done.setdefault(row_id, [])
        parts = split_for_telegram(message.text) if message.text.strip() else []
        markup = keyboard(message.buttons)
        try:
            for index, part in enumerate(parts):
                if index < len(done):
                    continue  # sent before a rate limit interrupted this row
                async with self._paced(target.chat_id):
                    sent = await self._send_text(bot, target, part, markup if index == len(parts) - 1 else None,
                                                 reply=index == 0)
                done.append(sent)
            for offset, attachment in enumerate(message.attachments):
                if len(parts) + offset < len(done):
                    continue
                file = InputFile(attachment.content, filename=attachment.filename)
                caption = escape(attachment.filename)[:MAX_CAPTION]
                async with self._paced(target.chat_id):
                    if attachment.content_type.startswith("image/"):
                        result = await bot.send_photo(target.chat_id, file, caption=caption,
                                                      parse_mode=ParseMode.HTML, message_thread_id=target.topic_id)
                    else:
                        result = await bot.send_document(target.chat_id, file, caption=caption,
                                                         parse_mode=ParseMode.HTML, message_thread_id=target.topic_id)
                done.append(result.message_id)
        except RetryAfter as exc:
            seconds = retry_seconds(exc)
            # INFO: the outbox logs the failed attempt itself, once, at WARNING.
            log.info("telegram flood wait %.0fs on outbox row %s (%d part(s) already sent)",
                     seconds, row_id, len(done))
            return DeliveryResult(ok=False, retry_after=timedelta(seconds=seconds), error=f"RetryAfter {seconds:.0f}s")
        except Forbidden as exc:
            self._parts_done.pop(row_id, None)
            return DeliveryResult(ok=False, permanent=True, error=f"Forbidden: {exc.message}")
        except BadRequest as exc:
            # Retrying the same request gets the same answer: permanent.
            self._parts_done.pop(row_id, None)
            return DeliveryResult(ok=False, permanent=True, error=f"BadRequest: {exc.message}")
        except (NetworkError, TelegramError) as exc:
            return DeliveryResult(ok=False, error=f"{type(exc).__name__}: {exc.message}")
        self._parts_done.pop(row_id, None)
        return DeliveryResult(ok=True, external_id=f"{target.chat_id}:{done[0]}" if done else None)

    async def _send_text(self, bot: Bot, target: ChatTarget, part: str, markup: Any, *, reply: bool) -> int:
        kwargs: dict[str, Any] = {"reply_markup": markup, "message_thread_id": target.topic_id}
        if reply and target.reply_to:
            kwargs["reply_to_message_id"] = target.reply_to
            kwargs["allow_sending_without_reply"] = True
        try:
            sent = await bot.send_message(target.chat_id, escape(part), parse_mode=ParseMode.HTML, **kwargs)
        except BadRequest as exc:
            if "can't parse entities" not in exc.message.lower():
                raise
            # Should not happen with escaped text; plain text is always accepted.
            log.error("telegram refused our HTML (%s); sending as plain text", exc.message)
            sent = await bot.send_message(target.chat_id, part, **kwargs)
        return int(sent.message_id)
