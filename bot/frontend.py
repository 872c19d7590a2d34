"""The Telegram front-end `mleg serve` starts (entry point `mleg.frontends`: telegram).

Long polling by default (bot.polling: an update is confirmed only once handled); webhook
mode when MLEG_TELEGRAM__WEBHOOK_URL is set (bot.webhook: an update is stored before it is
acknowledged, then handled by the worker). The Application is the one in bot.runtime,
shared with the outbox senders.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from telegram import Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import InvalidToken, NetworkError
from telegram.ext import CallbackQueryHandler, ChatMemberHandler, ContextTypes

from bot.channel import CHANNEL, chat_blocked, chat_came_back
from bot.commands import register_commands
from bot.groups import GroupRefusal, group_handlers
from bot.polling import Poller
from bot.runtime import BotRuntime, runtime_for
from bot.staff import StaffRoom, staff_handlers
from bot.staff_room import STAFF_CHANNEL
from bot.student import StudentHandler, student_handlers
from bot.webhook import UpdateWorker, WebhookEndpoint, set_webhook
from core.app.context import AppContext
from core.app.errors import UnreachableError

__all__ = ["TelegramFrontend"]

log = logging.getLogger(__name__)


class TelegramFrontend:
    name = "telegram"

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.runtime: BotRuntime | None = None
        self.poller: Poller | None = None
        self.worker: UpdateWorker | None = None
        self.endpoint: WebhookEndpoint | None = None
        self.webhook = False

    def enabled(self) -> bool:
        return bool(self.ctx.settings.telegram.token)

    def _add_handlers(self, runtime: BotRuntime) -> None:
        app = runtime.app
        staff, staff_message_handlers = staff_handlers(runtime)
        # Order matters: the first matching handler wins. Staff room, then other groups, then students.
        for handler in [*staff_message_handlers, *group_handlers(runtime), *student_handlers(runtime)]:
            app.add_handler(handler)
        router = _CallbackRouter(staff, GroupRefusal(runtime), StudentHandler(runtime))
        app.add_handler(CallbackQueryHandler(router.route))
        app.add_handler(ChatMemberHandler(_ChatMembership(self.ctx).on_change, ChatMemberHandler.MY_CHAT_MEMBER))
        app.add_handler(ChatMemberHandler(staff.on_member_change, ChatMemberHandler.CHAT_MEMBER))
        app.add_error_handler(_log_error)

    async def start(self) -> None:
        runtime = runtime_for(self.ctx)
        self._add_handlers(runtime)
        settings = self.ctx.settings.telegram
        try:
            await runtime.acquire()
            self.runtime = runtime
            await register_commands(runtime.bot, self.ctx.catalog, self.ctx.settings.default_language,
                                    self.ctx.settings.policy)
        except InvalidToken as exc:
            raise UnreachableError("Telegram refused the bot token: check MLEG_TELEGRAM__TOKEN") from exc
        except NetworkError as exc:
            # One line for the operator, not a traceback (the token stays out of it either way).
            raise UnreachableError(
                f"cannot reach the Telegram Bot API at {settings.api_base_url} ({exc.message}): check "
                "MLEG_TELEGRAM__API_BASE_URL and the network; a service manager may restart `mleg serve`"
            ) from exc
        await runtime.app.start()
        # Whatever a webhook stored and nobody handled yet goes first (oldest update_id first).
        self.worker = UpdateWorker(runtime.app, self.ctx, until_empty=not settings.webhook_url)
        self.worker.start()
        if settings.webhook_url:
            assert settings.webhook_secret is not None
            secret = settings.webhook_secret.get_secret_value()
            self.endpoint = WebhookEndpoint(self.ctx, secret=secret, on_stored=self.worker.wake)
            await self.endpoint.start(listen=settings.webhook_listen, port=settings.webhook_port,
                                      path=urlsplit(settings.webhook_url).path)
            await set_webhook(self.ctx, runtime.app, url=settings.webhook_url, secret=secret)
            self.webhook = True
            log.info("telegram: webhook mode on %s:%s", settings.webhook_listen, settings.webhook_port)
        else:
            await self.worker.wait()  # before getUpdates: the stored ones are older
            await self.worker.stop()
            self.worker = None
            self.poller = Poller(runtime.app)
            self.poller.start()
            log.info("telegram: long polling")

    async def stop(self) -> None:
        runtime, self.runtime = self.runtime, None
        if runtime is None:
            return
        if self.poller is not None:
            await self.poller.stop()
            self.poller = None
        if self.endpoint is not None:
            await self.endpoint.stop()  # nothing new stored; Telegram retries what it could not POST
            self.endpoint = None
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None
        if runtime.app.running:
            await runtime.app.stop()
        await runtime.release()


class _CallbackRouter:
    """Button presses go by chat: the staff room, another group (refused), or a student's chat."""

    def __init__(self, staff: StaffRoom, groups: GroupRefusal, students: StudentHandler) -> None:
        self.staff, self.groups, self.students = staff, groups, students

    async def route(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        if chat is not None and self.staff.chat_id is not None and chat.id == self.staff.chat_id:
            await self.staff.on_callback(update, context)
        elif chat is not None and chat.type != ChatType.PRIVATE:
            await self.groups.on_message(update, context)
        else:
            await self.students.on_update(update, context)


class _ChatMembership:
    """my_chat_member in a private chat: the student blocked the bot ("kicked") or unblocked it ("member").

    Telegram tells us at once, so reminders stop being attempted and, on the way back, the
    answers held while the bot was blocked go out without waiting for the student to write.
    Groups are not students: the bot joining or leaving one changes nothing here.
    """

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def on_change(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        change = update.my_chat_member
        if change is None or change.chat.type != ChatType.PRIVATE:
            return
        account = str(change.chat.id)
        status = change.new_chat_member.status
        if status == ChatMemberStatus.BANNED:
            await self.ctx.in_database(chat_blocked, self.ctx, account)
            log.info("a student blocked the bot")
        elif status == ChatMemberStatus.MEMBER:
            resent = await self.ctx.in_database(chat_came_back, self.ctx, account)
            for channel in (CHANNEL, STAFF_CHANNEL) if resent else ():
                self.ctx.outbox_changed(channel)


async def _log_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    # Never the update itself: it may carry a PESEL or a code the student typed.
    update_id = update.update_id if isinstance(update, Update) else "?"
    log.error("handling update %s failed: %r", update_id, type(context.error).__name__,
              exc_info=context.error)
