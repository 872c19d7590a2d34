"""The bot's rate limiter, run in virtual time: Telegram's limits hold in every sliding window."""

from __future__ import annotations

import asyncio
from pathlib import Path

from telegram.ext import AIORateLimiter

from bot.runtime import build_application, rate_limiter
from core.app.clock import SystemClock
from core.storage.db import make_engine
from tests.factories import build_ctx, make_settings


def _most_in_any_window(limiter_of_chat: object, window: float, horizon: float, step: float = 0.05) -> int:
    """Take a token whenever the limiter has one, on a virtual clock; the most taken in any `window`."""
    loop = asyncio.new_event_loop()
    now = [1000.0]
    loop.time = lambda: now[0]  # type: ignore[method-assign]
    taken: list[float] = []

    async def run() -> None:
        limiter = limiter_of_chat()  # type: ignore[operator]
        while now[0] < 1000.0 + horizon:
            while limiter.has_capacity():
                await limiter.acquire()
                taken.append(now[0])
            now[0] += step

    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
    return max(sum(1 for t in taken if start <= t < start + window) for start in taken)


def test_a_group_gets_at_most_twenty_messages_in_any_minute() -> None:
    limiter = rate_limiter(30.0)
    # Private API of PTB's AIORateLimiter: the per-group bucket is what we configure.
    assert _most_in_any_window(lambda: limiter._get_group_limiter(-1001), 60.0, 300.0) <= 20


def test_the_bot_sends_at_most_its_rate_in_any_second() -> None:
    limiter = rate_limiter(30.0)
    assert _most_in_any_window(lambda: limiter._base_limiter, 1.0, 10.0, step=0.001) <= 30


def test_the_group_rate_is_a_setting_and_reaches_the_bots_limiter(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, telegram={"token": "1:x", "group_messages_per_minute": 60.0})
    limiter = build_application(build_ctx(settings, make_engine("sqlite://"), SystemClock())).bot.rate_limiter
    assert isinstance(limiter, AIORateLimiter)
    # a burst of 5, then one a second: 5 + 60 in the first minute, far above the default's 20
    assert 60 <= _most_in_any_window(lambda: limiter._get_group_limiter(-1001), 60.0, 300.0) <= 65
