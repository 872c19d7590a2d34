"""The students' handler: a private-chat update -> one engine event -> replies queued in the outbox.

The engine runs in a worker thread (it is synchronous and touches the database) and
queues its replies in the same commit as the new conversation state; the "telegram"
drainer then sends them. A failed turn changes nothing (one unit of work), so the event
is not marked handled: the turn is tried again a few times, and only when every try
failed is the student told that something went wrong on our side.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import DBAPIError, OperationalError
from telegram import Update
from telegram.constants import ChatType, ParseMode
from telegram.error import TelegramError
from telegram.ext import BaseHandler, ContextTypes, MessageHandler, filters

from bot.events import CHANNEL, event_from_update, language_hint
from bot.render import escape
from bot.runtime import BotRuntime
from core.conversation import Event
from core.messaging import outbox
from core.messaging.outgoing import OutgoingMessage
from core.storage import update_store
from core.storage.db import unit_of_work

__all__ = ["student_handlers"]

log = logging.getLogger(__name__)
ATTEMPTS = 3
BACKOFF_SECONDS = (0.5, 2.0)
TRANSIENT = (OperationalError, DBAPIError, TimeoutError, ConnectionError)


class StudentHandler:
    """Translates a private-chat update and runs it through the conversation engine."""

    def __init__(self, runtime: BotRuntime) -> None:
        self.runtime = runtime
        self.ctx = runtime.ctx

    async def on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        if chat is None or chat.type != ChatType.PRIVATE:
            return  # a button under a message in a group: students are served only in private
        if update.callback_query is not None:
            # Answered at once: Telegram shows a spinner on the button until we do.
            try:
                await update.callback_query.answer()
            except TelegramError as exc:
                log.info("callback answer failed (%s); handling the press anyway", exc.message)
        event = event_from_update(update)
        if event is None:
            return
        await self.run(event, update)

    async def run(self, event: Event, update: Update) -> None:
        # A webhook update (bot.webhook) is marked handled in the turn's own commit.
        stored = update_store.handling.get()
        for attempt in range(ATTEMPTS):
            try:
                await self.ctx.in_database(self.runtime.service.handle, event, queue_channel=CHANNEL,
                                           stored_update=stored.row_id if stored is not None else None)
            except TRANSIENT as exc:
                # The driver's own words ("database is locked"), never the statement and its parameters.
                reason = getattr(exc, "orig", None) or exc
                log.warning("turn %s failed (attempt %d/%d): %s: %s", event.event_id, attempt + 1, ATTEMPTS,
                            type(exc).__name__, reason)
                if attempt + 1 == ATTEMPTS:
                    # Only now: a retry that succeeds would follow an apology with the answer.
                    log.error("turn %s given up after %d attempts", event.event_id, ATTEMPTS)
                    await self.apologise(update)
                    return
                await asyncio.sleep(BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)])
            except Exception:
                log.exception("turn %s failed", event.event_id)
                await self.apologise(update)
                return
            else:
                if stored is not None:
                    stored.marked = True
                self.ctx.outbox_changed(CHANNEL)
                return

    async def on_edited(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """An edit is not a new answer (the turn it belonged to is over): say to send it anew."""
        chat = update.effective_chat
        if chat is None:
            return
        language = await self.ctx.in_database(self._language_of, str(chat.id), language_hint(update))
        text = self.ctx.catalog.text(language, "edited_message")
        with unit_of_work(self.ctx.engine) as session:
            outbox.enqueue(session, self.ctx.box, key=f"edited:{chat.id}:{update.update_id}", channel=CHANNEL,
                           recipient=str(chat.id), kind="chat-reply", message=OutgoingMessage(text=text),
                           now=self.ctx.clock.now(), language=language)
        self.ctx.outbox_changed(CHANNEL)

    def _language_of(self, account: str, hint: str | None) -> str:
        chosen = self.runtime.service.state_of(CHANNEL, account).language
        return chosen or hint or self.ctx.settings.default_language

    async def apologise(self, update: Update) -> None:
        """Sent directly, not through the outbox: the outbox lives in the database that just failed."""
        chat = update.effective_chat
        if chat is None:
            return
        language = language_hint(update) or self.ctx.settings.default_language
        text = self.ctx.catalog.text(language, "error_technical")
        try:
            await self.runtime.bot.send_message(chat.id, escape(text), parse_mode=ParseMode.HTML)
        except TelegramError as exc:
            log.warning("could not tell the student about the failure: %s", exc.message)


def student_handlers(runtime: BotRuntime) -> list[BaseHandler]:  # type: ignore[type-arg]
    """Every message in a private chat goes to the engine: text, commands, stickers and the rest."""
    handler = StudentHandler(runtime)
    private = filters.ChatType.PRIVATE
    return [
        MessageHandler(private & ~filters.UpdateType.EDITED, handler.on_update),
        MessageHandler(private & filters.UpdateType.EDITED_MESSAGE, handler.on_edited),
    ]  # button presses reach on_update through the frontend's callback router
