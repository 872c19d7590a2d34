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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable

from telegram import Update
from telegram.error import Conflict, InvalidToken, RetryAfter, TelegramError
from telegram.ext import Application

from bot.delivery import retry_seconds

__all__ = ["Poller"]

log = logging.getLogger(__name__)
POLL_TIMEOUT_SECONDS = 25
ERROR_PAUSE_SECONDS = (1.0, 2.0, 5.0, 10.0)
CONCURRENCY = 32


def order_key(update: Update) -> Hashable:
    """Updates with the same key are handled in order: the chat, else the user, else all together."""
    if update.effective_chat is not None:
        return ("chat", update.effective_chat.id)
    if update.effective_user is not None:
        return ("user", update.effective_user.id)
    return ("any",)


class Poller:
    """getUpdates -> process each update in order -> confirm; until stopped."""

    def __init__(self, app: Application, *, timeout: int = POLL_TIMEOUT_SECONDS,  # type: ignore[type-arg]
                 concurrency: int = CONCURRENCY) -> None:
        self.app = app
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self.offset: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telegram-polling")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        # A webhook left over from webhook mode would make getUpdates fail with 409.
        await self.app.bot.delete_webhook(drop_pending_updates=False)
        failures = 0
        while True:
            try:
                updates = await self.app.bot.get_updates(
                    offset=self.offset, timeout=self.timeout, allowed_updates=Update.ALL_TYPES)
            except InvalidToken:
                log.error("the Telegram token was refused; polling stopped")
                return
            except RetryAfter as exc:
                await asyncio.sleep(retry_seconds(exc))
                continue
            except (Conflict, TelegramError) as exc:
                pause = ERROR_PAUSE_SECONDS[min(failures, len(ERROR_PAUSE_SECONDS) - 1)]
                failures += 1
                log.warning("getUpdates failed (%s); again in %.0fs", exc.message, pause)
                await asyncio.sleep(pause)
                continue
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
