"""Test helpers for the Telegram bot: a context pointed at the Bot API stand-in, the bot running
in-process under core.app.serve.Server (the real drainers), and a student who types and presses.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from sqlmodel import Session, col, select

from bot.channel import make_staff_channel, make_telegram_channel
from bot.frontend import TelegramFrontend
from core.app import serve
from core.app.clock import SystemClock
from core.app.context import AppContext
from core.messaging.outbox import open_body
from core.storage.db import make_engine
from core.storage.models import OutboxMessage, OutboxStatus
from tests.factories import SeededRandom, make_settings
from tests.servers.botapi import BotApiStandIn, SentMessage
from tests.support.chat import new_student  # re-exported: the bot tests take it from here

__all__ = ["STAFF_CHAT", "TgStudent", "bot_context", "new_student", "outbox_rows", "running_bot", "wait_until"]

STAFF_CHAT = -1001234
# The staff room is a group: after a burst of five, each further message waits its turn
# (bot.runtime); bot_context raises the group rate, a wait for its messages allows for a slow machine.
GROUP_WAIT_SECONDS = 20.0


def bot_context(tmp_path: Path, sqlite_url: str, api: BotApiStandIn, **telegram: Any) -> AppContext:
    """A real clock: outbox retries are due in real seconds here."""
    values: dict[str, Any] = {
        "token": api.token, "api_base_url": api.base_url, "staff_chat_id": STAFF_CHAT,
        "messages_per_chat_per_second": 200.0,  # the 1/s pacing has its own test
        "group_messages_per_minute": 600.0,  # so has the group's (tests/test_bot_rate_limits.py)
    }
    values.update(telegram)
    api.add_chat(STAFF_CHAT, chat_type="supergroup", title="Biuro obsługi mLegitymacji")
    settings = make_settings(tmp_path, database_url=sqlite_url, telegram=values)
    return AppContext(settings=settings, engine=make_engine(sqlite_url), clock=SystemClock(), random=SeededRandom())


@asynccontextmanager
async def running_bot(ctx: AppContext) -> AsyncIterator[serve.Server]:
    """`mleg serve` in this process with only the Telegram front-end and channels (no jobs, no mail)."""
    channels = {name: sender for name, sender in
                (("telegram", make_telegram_channel(ctx)), ("staff", make_staff_channel(ctx))) if sender}
    server = serve.Server(ctx, run_jobs=False)
    with mock.patch.object(serve, "load_channels", lambda _ctx: channels), \
            mock.patch.object(serve, "load_frontends", lambda _ctx: [TelegramFrontend(ctx)]):
        await server.start()
    try:
        yield server
    finally:
        await server.stop()


def outbox_rows(ctx: AppContext, **where: Any) -> list[OutboxMessage]:
    with Session(ctx.engine) as session:
        query = select(OutboxMessage).order_by(col(OutboxMessage.id))
        for name, value in where.items():
            query = query.where(getattr(OutboxMessage, name) == value)
        return list(session.exec(query).all())


async def wait_until(predicate: Any, timeout: float = 5.0, what: str = "condition",  # noqa: ASYNC109
                     interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout}s")
        await asyncio.sleep(interval)


class TgStudent:
    """A student in a private chat with the bot: types, presses buttons, reads what arrived."""

    def __init__(self, api: BotApiStandIn, ctx: AppContext, chat_id: int, *, language_code: str = "pl",
                 first_name: str = "Jan") -> None:
        self.api, self.ctx, self.chat_id = api, ctx, chat_id
        self.language_code, self.first_name = language_code, first_name
        self.seen = 0
        self.last: list[SentMessage] = []

    def _settled(self) -> bool:
        rows = outbox_rows(self.ctx, channel="telegram", recipient=str(self.chat_id))
        return all(r.status in (OutboxStatus.SENT, OutboxStatus.FAILED) for r in rows)

    async def replies(self, timeout: float = 5.0) -> list[SentMessage]:  # noqa: ASYNC109
        """What arrived since the last look: at least one message, and everything queued so far."""
        await self.api.await_messages(self.chat_id, self.seen + 1, timeout=timeout)
        await wait_until(self._settled, timeout, f"outbox of chat {self.chat_id} drained")
        messages = self.api.sent_messages(self.chat_id)
        self.last, self.seen = messages[self.seen:], len(messages)
        return self.last

    @property
    def text(self) -> str:
        return "\n".join(m.plain_text or "" for m in self.last)

    async def say(self, text: str) -> list[SentMessage]:
        if text.startswith("/"):
            command, _, args = text.partition(" ")
            self.api.push_command(self.chat_id, self.chat_id, command, args, first_name=self.first_name,
                                  language_code=self.language_code)
        else:
            self.api.push_text(self.chat_id, self.chat_id, text, first_name=self.first_name,
                               language_code=self.language_code)
        return await self.replies()

    async def press(self, data: str) -> list[SentMessage]:
        """Press the button with this callback_data on the newest message that has it."""
        for message in reversed(self.api.sent_messages(self.chat_id)):
            if any(b.get("callback_data") == data for b in message.buttons):
                self.api.push_callback(self.chat_id, self.chat_id, data, message.message_id,
                                       first_name=self.first_name, language_code=self.language_code)
                return await self.replies()
        raise AssertionError(f"no button {data!r}; last texts: {self.text!r}")

    def binding_code(self) -> str:
        row = outbox_rows(self.ctx, kind="binding-code")[-1]
        match = re.search(r"\b(\d{6})\b", open_body(self.ctx.box, row).text)
        assert match
        return match.group(1)
