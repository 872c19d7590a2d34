"""At start the bot says when the e-mails' link to it (MLEG_TELEGRAM__BOT_USERNAME) is missing or wrong."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bot_harness import bot_context, running_bot
from tests.servers.botapi import BotApiStandIn

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def api() -> Iterator[BotApiStandIn]:
    with BotApiStandIn(bot_username="UczelniaDemoBot") as standin:
        yield standin


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "MLEG_TELEGRAM__BOT_USERNAME" in r.getMessage()]


@pytest.mark.parametrize(("configured", "told"), [
    ("", "not set: e-mails name the bot's chat without a link; set it to UczelniaDemoBot"),
    ("InnaUczelniaBot", "this token is the bot @UczelniaDemoBot"),
    ("uczelniademobot", None),  # Telegram usernames are case-insensitive
])
async def test_the_bot_username_is_checked_against_get_me(
    api: BotApiStandIn, tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture,
    configured: str, told: str | None,
) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api, bot_username=configured)
    with caplog.at_level(logging.WARNING, logger="bot.runtime"):
        async with running_bot(ctx):
            pass
    warnings = _warnings(caplog)
    if told is None:
        assert not warnings
    else:
        assert len(warnings) == 1 and told in warnings[0]
