"""Groups and channels that are not the staff room: a short refusal, nothing else.

Students are served only in private chats, so nobody's PESEL or code is ever typed where
others read. The refusal goes through the outbox like every message. In a group only a
message meant for the bot (a command, a mention, a reply to it) gets one, at most once a day
per group: with privacy mode off (the staff room needs it, and it is a setting of the whole
bot) the bot sees all the chatter of every group, and answering each line floods the group.
A channel gets one refusal, for its first post.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.constants import ChatType
from telegram.ext import BaseHandler, ContextTypes, MessageHandler, filters

from bot.events import CHANNEL, language_hint
from bot.runtime import BotRuntime
from core.messaging import outbox
from core.messaging.outgoing import OutgoingMessage
from core.storage.db import unit_of_work

__all__ = ["group_handlers"]

log = logging.getLogger(__name__)


class GroupRefusal:
    def __init__(self, runtime: BotRuntime) -> None:
        self.runtime = runtime
        self.ctx = runtime.ctx

    def _is_staff_room(self, chat_id: int) -> bool:
        return chat_id == self.ctx.settings.telegram.staff_chat_id

    @staticmethod
    def _meant_for_bot(update: Update, username: str | None) -> bool:
        if update.callback_query is not None:
            return True
        message = update.effective_message
        if message is None:
            return False
        if message.text and message.text.startswith("/"):
            return True
        if username and f"@{username.lower()}" in (message.text or message.caption or "").lower():
            return True
        replied = message.reply_to_message
        return bool(replied and replied.from_user and replied.from_user.username == username)

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        if chat is None or chat.type == ChatType.PRIVATE or self._is_staff_room(chat.id):
            return
        message = update.effective_message
        if message is not None and (message.new_chat_members or message.left_chat_member):
            return  # service messages about membership are not requests
        if update.callback_query is not None:
            await update.callback_query.answer()
        if chat.type == ChatType.CHANNEL:
            key = f"refuse:{chat.id}"
        elif self._meant_for_bot(update, context.bot.username):
            key = f"refuse:{chat.id}:{self.ctx.clock.today().isoformat()}"
        else:
            return  # people talking among themselves
        language = language_hint(update) or self.ctx.settings.default_language
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
