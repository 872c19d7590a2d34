"""Long polling that confirms an update only after it was handled, so a crash loses nothing.

PTB's own Updater confirms a batch (the next getUpdates offset) as soon as it has fetched
it, before the handlers ran; a `kill -9` in between would lose those updates. Here the
offset moves past an update only once `Application.process_update` returned for it,
that is once its turn was committed with its replies in the outbox. After a crash
Telegram sends the unconfirmed updates again and the engine, which remembers the
update ids it handled, answers a repeat with nothing.

The updates of one batch are handled concurrently across chats (up to `concurrency` at
a time) and one after another within a chat, so a student's turns keep their order
while other students do not wait behind them; the batch is confirmed once all of it
was handled.

Telegram allows one getUpdates per bot token at a time; a second one ends the first with
409 Conflict. Several `mleg serve` on one PostgreSQL therefore poll by turns: the one that
holds the advisory lock TELEGRAM_POLLING_LOCK polls, the others only send (their outbox
drainers run regardless) and try the lock now and then, so one takes over when the poller
dies (PostgreSQL drops the lock with its connection). SQLite is one process: it just polls.
A 409 that still comes (another installation with the same token, or a webhook set on it)
is one ERROR naming the cause, and a long pause between tries, not a warning a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Hashable

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from telegram import Update
from telegram.error import Conflict, InvalidToken, RetryAfter, TelegramError
from telegram.ext import Application

from bot.delivery import retry_seconds
from bot.runtime import runtime_of
from core.app.context import AppContext
from core.jobs.leader import TELEGRAM_POLLING_LOCK, Leadership

__all__ = ["Poller", "PollingLock"]

log = logging.getLogger(__name__)
POLL_TIMEOUT_SECONDS = 25
ERROR_PAUSE_SECONDS = (1.0, 2.0, 5.0, 10.0)
CONCURRENCY = 32
# A 409 means someone else holds the token's getUpdates: retrying every second would only take
# turns with them at ending each other's polls.
CONFLICT_PAUSE_SECONDS = 30.0
# How often a server that does not poll tries the polling lock (a take-over waits at most this).
LOCK_RETRY_SECONDS = 10.0
# How often the poller proves it still holds the lock (a lost connection is a lost lock).
LOCK_CHECK_SECONDS = 10.0


class PollingLock(Leadership):
    """The session-level advisory lock of the one poller, on a connection of its own.

    core.jobs.leader.Leadership, made safe for worker threads: its calls run on them and a stop
    may come while one is under way, so they take turns, and after `release` nothing is taken
    any more (a try that finished after the stop would keep the lock for good).
    """

    def __init__(self, engine: Engine, name: str = TELEGRAM_POLLING_LOCK, *, purpose: str = "Telegram polling") -> None:
        super().__init__(engine, name, purpose=purpose)
        self._turns = threading.Lock()
        self._closed = False

    def try_acquire(self) -> bool:
        with self._turns:
            return False if self._closed else super().try_acquire()

    def release(self) -> None:
        with self._turns:
            self._closed = True
            super().release()


def _conflict_cause(message: str) -> str:
    if "webhook" in message.lower():
        return ("a webhook is set for this bot token (another installation in webhook mode?), and getUpdates "
                "cannot be used while it is; remove it (deleteWebhook) or run this one in webhook mode too")
    return ("another program is polling with this bot token: another installation, or a `mleg serve` on "
            "another database; Telegram allows one poller per token, so stop it or give it its own token")


def order_key(update: Update) -> Hashable:
    """Updates with the same key are handled in order: the chat, else the user, else all together."""
    if update.effective_chat is not None:
        return ("chat", update.effective_chat.id)
    if update.effective_user is not None:
        return ("user", update.effective_user.id)
    return ("any",)


class Poller:
    """getUpdates -> process each update in order -> confirm; until stopped.

    `polling` says whether this server polls now (it holds the polling lock, or needs none);
    `lock_tries` counts its tries of the lock.
    """

    def __init__(self, app: Application, *, ctx: AppContext | None = None,  # type: ignore[type-arg]
                 timeout: int = POLL_TIMEOUT_SECONDS, concurrency: int = CONCURRENCY,
                 lock_retry_seconds: float = LOCK_RETRY_SECONDS) -> None:
        self.app = app
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self.offset: int | None = None
        self._task: asyncio.Task[None] | None = None
        if ctx is None:
            runtime = runtime_of(app)
            ctx = runtime.ctx if runtime is not None else None
        self._engine = ctx.engine if ctx is not None and ctx.engine.dialect.name == "postgresql" else None
        self._lock: PollingLock | None = None
        self._lock_retry = lock_retry_seconds
        self._lock_checked = 0.0
        self.polling = False
        self.lock_tries = 0

    def start(self) -> None:
        if self._engine is not None:
            self._lock = PollingLock(self._engine)
        self._task = asyncio.create_task(self._run(), name="telegram-polling")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._release()

    async def _release(self) -> None:
        lock, self._lock = self._lock, None
        self.polling = False
        if lock is not None:
            await asyncio.to_thread(lock.release)
            log.info("released the Telegram polling lock")

    async def _lead(self) -> bool:
        """Whether this server polls now; takes the polling lock when it is free."""
        if self._lock is None:
            self.polling = True
            return True
        if self.polling and time.monotonic() - self._lock_checked < LOCK_CHECK_SECONDS:
            return True
        try:
            held = await asyncio.to_thread(self._lock.try_acquire)
        except sa.exc.DBAPIError as exc:
            log.warning("cannot reach the database for the Telegram polling lock: %s", type(exc).__name__)
            held = False
        self.lock_tries += 1
        self._lock_checked = time.monotonic()
        if held and not self.polling:
            log.info("took the Telegram polling lock: this server polls Telegram")
        elif not held and (self.polling or self.lock_tries == 1):
            log.info("another server polls Telegram (it holds the polling lock): this one only sends, "
                     "and takes over when that one stops")
        self.polling = held
        return held

    async def _run(self) -> None:
        failures = 0
        in_conflict = False
        webhook_checked = False
        while True:
            if not await self._lead():
                await asyncio.sleep(self._lock_retry)
                continue
            try:
                if not webhook_checked:
                    # A webhook left over from webhook mode would make getUpdates fail with 409.
                    await self.app.bot.delete_webhook(drop_pending_updates=False)
                    webhook_checked = True
                updates = await self.app.bot.get_updates(
                    offset=self.offset, timeout=self.timeout, allowed_updates=Update.ALL_TYPES)
            except InvalidToken:
                log.error("the Telegram token was refused; polling stopped")
                await self._release()
                return
            except RetryAfter as exc:
                await asyncio.sleep(retry_seconds(exc))
                continue
            except Conflict as exc:
                if self._lock is not None:
                    # Our lock's connection may have dropped and a sibling server taken over the
                    # polling: then this is a hand-over, not someone else's poller.
                    self._lock_checked = 0.0
                    if not await self._lead():
                        continue
                if not in_conflict:  # once per episode: the cause does not change by the second
                    log.error("Telegram refuses our getUpdates (409: %s): %s. Trying again every %.0f s.",
                              exc.message, _conflict_cause(exc.message), CONFLICT_PAUSE_SECONDS)
                    in_conflict = True
                await asyncio.sleep(CONFLICT_PAUSE_SECONDS)
                continue
            except TelegramError as exc:
                pause = ERROR_PAUSE_SECONDS[min(failures, len(ERROR_PAUSE_SECONDS) - 1)]
                failures += 1
                log.warning("getUpdates failed (%s); again in %.0fs", exc.message, pause)
                await asyncio.sleep(pause)
                continue
            if in_conflict:
                log.info("getUpdates works again: the other poller of this token is gone")
                in_conflict = False
            failures = 0
            if updates:
                await self._handle_batch(updates)
                self.offset = updates[-1].update_id + 1

    async def _handle_batch(self, updates: list[Update]) -> None:
        chains: dict[Hashable, list[Update]] = {}
        for update in updates:
            chains.setdefault(order_key(update), []).append(update)
        await asyncio.gather(*(self._handle_chain(chain) for chain in chains.values()))

    async def _handle_chain(self, chain: list[Update]) -> None:
        for update in chain:
            async with self._slots:
                # process_update hands a handler's error to the error handlers, never raises it.
                await self.app.process_update(update)
