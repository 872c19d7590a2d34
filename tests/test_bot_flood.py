"""Telegram's flood limits: a 429 is honoured (retry_after), nothing is lost, nothing doubled, order kept."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot import delivery as delivery_module
from bot.delivery import Delivery
from tests.bot_harness import bot_context, outbox_rows, running_bot
from tests.servers.botapi import BotApiStandIn

pytestmark = [pytest.mark.timeout(30), pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")]


def _two_turns(api: BotApiStandIn, chat_id: int) -> None:
    """Two updates at once (a turn's replies go as one message): two rows for the chat."""
    api.push_command(chat_id, chat_id, "/start")
    api.push_command(chat_id, chat_id, "/help")


async def test_retry_after_honoured_in_order_once(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    async with running_bot(ctx):
        api.force_retry_after(1, retry_after=1, methods=["sendMessage"])
        started = time.monotonic()
        _two_turns(api, 6161)
        await api.await_messages(6161, 2)
        assert time.monotonic() - started >= 1.0  # the wait Telegram asked for
    # Stopping waits for the delivery in flight to be recorded: nothing is left to resend.
    rows = outbox_rows(ctx, channel="telegram")
    assert len(rows) == 2 and all(r.status == "sent" for r in rows)
    sent = api.sent_messages(6161)
    # Each reply exactly once, in the order the engine said them.
    assert len(sent) == len(rows)
    assert [m.message_id for m in sent] == sorted(m.message_id for m in sent)
    # /start's reply (the greeting, then the language question) first; /help's (what to type, and the
    # question again) second.
    choose, hint = ctx.catalog.text("pl", "language.choose"), ctx.catalog.text("pl", "language.hint")
    greeting = f"{ctx.catalog.text('pl', 'greeting')}\n\n{ctx.catalog.text('en', 'greeting')}"  # both languages
    assert [m.plain_text for m in sent] == [f"{greeting}\n\n{choose}", f"{hint}\n\n{choose}"]
    assert api.rate_limited_count(6161) == 1


async def test_one_message_per_second_per_chat(api: BotApiStandIn, tmp_path: Path, sqlite_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api, messages_per_chat_per_second=1.0)
    api.enforce_rate_limits = True  # the stand-in answers 429 beyond 1 message/s into one chat
    # The pacing on the limiter's own clock: when it let each request go, and when that
    # request was answered (the gap is counted from the answer: the message had reached Telegram).
    paced = Delivery._paced
    went: list[float] = []
    answered: list[float] = []

    @asynccontextmanager
    async def watched(self: Delivery, chat_id: int) -> AsyncIterator[None]:
        async with paced(self, chat_id):
            went.append(delivery_module.time.monotonic())
            yield
            answered.append(delivery_module.time.monotonic())

    monkeypatch.setattr(Delivery, "_paced", watched)
    async with running_bot(ctx):
        _two_turns(api, 6262)
        assert len(await api.await_messages(6262, 2)) >= 2
    assert api.rate_limited_count() == 0  # paced by the sender, never refused
    assert len(went) == len(answered) == len([c for c in api.calls("sendMessage") if c.ok]) == 2
    # asyncio may run a timer one clock tick early: 1 ms of slack, far below any real shortfall.
    assert went[1] - answered[0] >= 1.0 - 1e-3
