"""The one python-telegram-bot Application per AppContext, shared by the front-end and the senders.

`mleg serve` builds the channel senders (entry points `mleg.channels`) and the front-end
(`mleg.frontends`) separately; both call `runtime_for(ctx)` and get the same object, so
one Bot, one HTTP pool and one AIORateLimiter (30 messages/s overall, 15/min per group)
serve both the updates coming in and the outbox going out. Each user `acquire()`s it
(the first one initialises the Bot) and `release()`s it (the last one shuts it down).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from telegram.error import TelegramError
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder

from core.app.context import AppContext

if TYPE_CHECKING:
    from core.conversation import ConversationService

__all__ = ["BotRuntime", "RuntimeUser", "build_application", "file_base_url", "runtime_for", "runtime_of"]

log = logging.getLogger(__name__)
# How long a staff member's status in the staff chat is trusted without asking Telegram again.
# Short, because a removed member keeps acting for that long when no update tells us sooner
# (bot.frontend forgets a member at once on a chat_member update or a "left" service message).
MEMBER_CACHE_SECONDS = 10.0
CONNECTION_POOL_SIZE = 64
POOL_TIMEOUT_SECONDS = 10.0
_RUNTIMES: dict[int, BotRuntime] = {}
# Telegram: about 20 messages a minute into one group (the staff room is one). A small burst
# keeps a staff command and its answer quick: 5 at once, then refilled at the group rate
# (`group_messages_per_minute`, 15 by default: 20 in any minute at most).
GROUP_BURST = 5

# With max_retries=0 the limiter re-raises RetryAfter (we want it: the outbox row is
# rescheduled instead of holding the drainer), but logs a full traceback first; our
# sender logs the flood wait itself.
logging.getLogger("telegram.ext.AIORateLimiter").setLevel(logging.CRITICAL)


def file_base_url(api_base_url: str) -> str:
    """`https://host/bot` -> `https://host/file/bot` (how Bot API servers lay out files)."""
    base = api_base_url.rstrip("/")
    if base.endswith("/bot"):
        return base[: -len("/bot")] + "/file/bot"
    return base + "/file/bot"


def rate_limiter(messages_per_second: float, group_messages_per_minute: float = 15.0) -> AIORateLimiter:
    """The bot's limiter: `messages_per_second` overall, `group_messages_per_minute` into a group.

    aiolimiter's bucket starts full: "30 per 1 s" sends a burst of 30 and then 30/s, up to 60
    in one sliding second, and "20 per 60 s" up to 40 in a sliding minute; Telegram answers
    429 to both (seen on the stand-in: the staff room, a group, got ten 429s in its first half
    minute). So one message per 1/rate s overall, and a burst plus its refill within 20 a
    minute per group.
    """
    rate = messages_per_second
    return AIORateLimiter(
        overall_max_rate=1 if rate > 0 else 0,
        overall_time_period=1 / rate if rate > 0 else 0,
        group_max_rate=GROUP_BURST,
        group_time_period=GROUP_BURST * 60.0 / group_messages_per_minute,
        max_retries=0,
    )


def build_application(ctx: AppContext) -> Application:  # type: ignore[type-arg]
    telegram = ctx.settings.telegram
    assert telegram.token is not None
    limiter = rate_limiter(telegram.messages_per_second, telegram.group_messages_per_minute)
    return (
        ApplicationBuilder()
        .token(telegram.token.get_secret_value())
        .base_url(telegram.api_base_url)
        .base_file_url(file_base_url(telegram.api_base_url))
        .rate_limiter(limiter)
        # PTB's default is one connection: the concurrent updates and outbox chains (bot.polling,
        # core.app.serve) would queue for it, and past pool_timeout (1 s) fail with TimedOut.
        .connection_pool_size(CONNECTION_POOL_SIZE)
        .pool_timeout(POOL_TIMEOUT_SECONDS)
        .build()
    )


class BotRuntime:
    """The shared Application plus small caches the handlers and senders both need."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.app = build_application(ctx)
        self._users = 0
        self._lock = asyncio.Lock()
        self._initialized = False
        self._service: ConversationService | None = None
        self._staff_is_forum: bool | None = None
        self._staff_public: str | None = None  # the staff chat's @username when it is public
        self._members: dict[int, tuple[float, str]] = {}

    @property
    def bot(self):  # type: ignore[no-untyped-def]
        return self.app.bot

    @property
    def service(self) -> ConversationService:
        """The engine, built once (it loads the FAQ and terms)."""
        if self._service is None:
            from core.conversation import ConversationService

            self._service = ConversationService(self.ctx)
        return self._service

    async def acquire(self) -> None:
        async with self._lock:
            self._users += 1
            if not self._initialized:
                await self.app.initialize()
                self._initialized = True
                self._check_username()

    def _check_username(self) -> None:
        """Say when the e-mails' link to the bot (MLEG_TELEGRAM__BOT_USERNAME) is missing or wrong.

        Only the bot's own getMe knows its username; jobs and the mail reader compose e-mails
        without a bot, from the setting, so a wrong one would send students to another bot.
        """
        configured, actual = self.ctx.settings.telegram.bot_username, self.app.bot.username or ""
        if not configured:
            log.warning("MLEG_TELEGRAM__BOT_USERNAME is not set: e-mails name the bot's chat without a link; "
                        "set it to %s", actual)
        elif configured.lower() != actual.lower():
            log.warning("MLEG_TELEGRAM__BOT_USERNAME is %s but this token is the bot @%s: e-mails link to "
                        "https://t.me/%s; set it to %s", configured, actual, configured, actual)

    async def release(self) -> None:
        async with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            _RUNTIMES.pop(id(self.ctx), None)
            if self._initialized:
                self._initialized = False
                await self.app.shutdown()

    # --- staff room lookups, cached because every staff action would otherwise ask Telegram ---
    async def _look_up_staff_chat(self) -> bool:
        """Ask Telegram what the staff chat is (forum? public?); False when it cannot be asked now."""
        chat_id = self.ctx.settings.telegram.staff_chat_id
        if chat_id is None:
            return False
        if self._staff_is_forum is None:
            try:
                chat = await self.bot.get_chat(chat_id)
            except TelegramError as exc:
                # Not cached: the send that follows reports the real problem (e.g. chat not found).
                log.warning("cannot look up the staff chat: %s", exc.message)
                return False
            self._staff_is_forum = bool(chat.is_forum)
            self._staff_public = chat.username or None
        return True

    async def staff_is_forum(self) -> bool:
        return await self._look_up_staff_chat() and bool(self._staff_is_forum)

    async def staff_chat_refusal(self) -> str | None:
        """Why nothing may be posted to the staff chat, or None.

        A chat with a public @username (a public group or channel) can be read by anyone who
        finds it; escalations carry students' names, albums and questions. Asked again after a
        refusal, so making the group private lets the waiting escalations out.
        """
        if not await self._look_up_staff_chat() or self._staff_public is None:
            return None
        public = self._staff_public
        self.forget_forum()
        return (f"the staff chat is public (@{public}): refusing to post escalations there; make it a private "
                "group (remove its public link) or set MLEG_TELEGRAM__STAFF_CHAT_ID to a private one")

    def forget_forum(self) -> None:
        self._staff_is_forum = None
        self._staff_public = None

    def forget_member(self, user_id: int | None = None) -> None:
        """Ask Telegram again next time: the member's status changed (None: everyone's)."""
        if user_id is None:
            self._members.clear()
        else:
            self._members.pop(user_id, None)

    async def member_status(self, user_id: int) -> str:
        """The user's status in the staff chat (creator, administrator, member, left, ...)."""
        chat_id = self.ctx.settings.telegram.staff_chat_id
        if chat_id is None:
            return "left"
        cached = self._members.get(user_id)
        if cached and time.monotonic() - cached[0] < MEMBER_CACHE_SECONDS:
            return cached[1]
        member = await self.bot.get_chat_member(chat_id, user_id)
        self._members[user_id] = (time.monotonic(), str(member.status))
        return str(member.status)


def runtime_for(ctx: AppContext) -> BotRuntime:
    """The runtime of this context, created on first use."""
    runtime = _RUNTIMES.get(id(ctx))
    if runtime is None or runtime.ctx is not ctx:
        runtime = BotRuntime(ctx)
        _RUNTIMES[id(ctx)] = runtime
    return runtime


def runtime_of(app: Application) -> BotRuntime | None:  # type: ignore[type-arg]
    """The runtime an Application belongs to (the poller is handed the Application alone)."""
    return next((runtime for runtime in _RUNTIMES.values() if runtime.app is app), None)


class RuntimeUser:
    """A sender that holds the shared runtime only while it is in use."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.runtime = runtime_for(ctx)
        self._acquired = False

    async def ready(self) -> BotRuntime:
        if not self._acquired:
            await self.runtime.acquire()
            self._acquired = True
        return self.runtime

    async def close(self) -> None:
        if self._acquired:
            self._acquired = False
            await self.runtime.release()
