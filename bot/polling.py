"""Long polling that confirms an update only after it was handled, so a crash loses nothing.

PTB's own Updater confirms a batch (the next getUpdates offset) as soon as it has fetched
it, before the handlers ran; a `kill -9` in between would lose those updates. Here the
offset moves past an update only once `Application.process_update` returned for it,
that is once its turn was committed with its replies in the outbox. After a crash
Telegram sends the unconfirmed updates again and the engine, which remembers the
update ids it handled, answers a repeat with nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from telegram import Update
from telegram.error import Conflict, InvalidToken, RetryAfter, TelegramError
from telegram.ext import Application

from bot.delivery import retry_seconds

__all__ = ["Poller"]

log = logging.getLogger(__name__)
POLL_TIMEOUT_SECONDS = 25
ERROR_PAUSE_SECONDS = (1.0, 2.0, 5.0, 10.0)


class Poller:
    """getUpdates -> process each update in order -> confirm; until stopped."""

    def __init__(self, app: Application, *, timeout: int = POLL_TIMEOUT_SECONDS) -> None:  # type: ignore[type-arg]
        self.app = app
        self.timeout = timeout
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
            for update in updates:
                # process_update hands a handler's error to the error handlers, never raises it.
                await self.app.process_update(update)
                self.offset = update.update_id + 1
