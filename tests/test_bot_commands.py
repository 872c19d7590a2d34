"""The Telegram command menu: every command in it is one the conversation understands, in both languages."""

from __future__ import annotations

import pytest

from bot.commands import COMMANDS, command_list
from core.catalog import LANGUAGES
from core.context import AppContext
from tests.chat_driver import ChatDriver


@pytest.mark.parametrize("language", LANGUAGES)
def test_menu_has_a_description_for_every_command(sqlite_ctx: AppContext, language: str) -> None:
    menu = command_list(sqlite_ctx.catalog, language)
    assert [c.command for c in menu] == list(COMMANDS)
    # Telegram: 1-256 characters per description.
    assert all(0 < len(c.description) <= 256 for c in menu)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_menu_command_is_understood(sqlite_ctx: AppContext, command: str) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("en")
    chat.say(f"/{command}")
    assert "I do not know that command" not in chat.text
