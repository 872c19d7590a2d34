"""The Telegram command menu: every command in it is one the conversation understands, in both languages."""

from __future__ import annotations

import pytest

from bot.commands import COMMANDS, command_list
from core.app.catalog import LANGUAGES
from core.app.context import AppContext
from tests.chat_driver import ChatDriver


@pytest.mark.parametrize("language", LANGUAGES)
def test_menu_has_a_description_for_every_command(sqlite_ctx: AppContext, language: str) -> None:
    menu = command_list(sqlite_ctx.catalog, language)
    assert [c.command for c in menu] == list(COMMANDS)
    # Telegram: 1-256 characters per description.
    assert all(0 < len(c.description) <= 256 for c in menu)


# What each command answers a student who has accepted the terms and is asked for a PESEL
# (catalog keys, in order): each its own answer, none the unknown-command one.
_BEFORE_IDENTIFYING = ["identify.first", "identify.ask_pesel"]
EXPECTED = {
    "start": ["identify.ask_pesel"],
    "request": _BEFORE_IDENTIFYING, "status": _BEFORE_IDENTIFYING, "renew": _BEFORE_IDENTIFYING,
    "revoke": _BEFORE_IDENTIFYING, "support": _BEFORE_IDENTIFYING,
    "help": ["help.before_binding", "identify.ask_pesel"],
    "terms": None,  # the terms document itself, below
    "language": ["language.choose"],
    "cancel": ["cancelled", "identify.ask_pesel"],
    "forget": ["forget.confirm"],
}


def test_the_expected_answers_cover_the_menu() -> None:
    assert sorted(EXPECTED) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_menu_command_is_understood(sqlite_ctx: AppContext, command: str) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("en")
    chat.say(f"/{command}")
    keys = EXPECTED[command]
    if keys is None:
        # The newest plain version (a `<version>.<policy>.en.md` is that version's wording under a policy).
        folder = sqlite_ctx.settings.config_dir / "terms"
        newest = sorted(p for p in folder.glob("*.en.md") if p.name.count(".") == 2)[-1]
        heading = sqlite_ctx.catalog.text("en", "terms.full_heading", version=newest.name.split(".")[0])
        assert chat.text.startswith(heading + "\n\n" + newest.read_text(encoding="utf-8").splitlines()[0])
    else:
        assert chat.text == "\n".join(sqlite_ctx.catalog.text("en", key).strip() for key in keys)
