"""Groups and channels that are not the staff room: a short refusal, nothing else.

Students are served only in private chats, so nobody's PESEL or code is ever typed where
others read. The refusal goes through the outbox like every message. In a group each
message the bot sees gets one (with privacy mode on it sees only commands and replies to
it); in a channel only the first post does, so a channel is not flooded with refusals.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.constants import ChatType
from telegram.ext import BaseHandler, ContextTypes, MessageHandler, filters

from bot.events import CHANNEL, language_hint
from bot.runtime import BotRuntime
from core import outbox
from core.db import unit_of_work
from core.outgoing import OutgoingMessage

__all__ = ["group_handlers"]

log = logging.getLogger(__name__)


class GroupRefusal:
    def __init__(self, runtime: BotRuntime) -> None:
        self.runtime = runtime
        self.ctx = runtime.ctx

    def _is_staff_room(self, chat_id: int) -> bool:
        return chat_id == self.ctx.settings.telegram.staff_chat_id

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        if chat is None or chat.type == ChatType.PRIVATE or self._is_staff_room(chat.id):
            return
        message = update.effective_message
        if message is not None and (message.new_chat_members or message.left_chat_member):
            return  # service messages about membership are not requests
        if update.callback_query is not None:
            await update.callback_query.answer()
        language = language_hint(update) or self.ctx.settings.default_language
        key = f"refuse:{chat.id}" if chat.type == ChatType.CHANNEL else f"refuse:{chat.id}:{update.update_id}"
        text = self.ctx.catalog.text(language, "refuse_group")
        with unit_of_work(self.ctx.engine) as session:
            outbox.enqueue(session, self.ctx.box, key=key, channel=CHANNEL, recipient=str(chat.id),
                           kind="chat-refusal", message=OutgoingMessage(text=text), now=self.ctx.clock.now(),
                           language=language)
        log.info("refused a %s chat", chat.type)
        self.ctx.outbox_changed(CHANNEL)


def group_handlers(runtime: BotRuntime) -> list[BaseHandler]:  # type: ignore[type-arg]
    refusal = GroupRefusal(runtime)
    not_private = ~filters.ChatType.PRIVATE & ~filters.UpdateType.EDITED
    return [MessageHandler(not_private, refusal.on_message)]
