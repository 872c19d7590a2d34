"""Issue 15's five transcripts on Telegram (the real PTB Application and the Bot API stand-in):
the student types instead of tapping, and every step understands. Console side: test_chat_understanding.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.app.context import AppContext
from core.storage.models import Credential, SupportThread
from core.understanding import load_understanding
from tests.bot_harness import TgStudent, bot_context, new_student, running_bot
from tests.servers.botapi import BotApiStandIn

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module", autouse=True)
def _trained() -> None:
    """The understanding is trained once per process (seconds): not inside the first reply's wait."""
    load_understanding(Path(__file__).resolve().parents[1] / "config" / "intents.toml")


def _buttons(chat: TgStudent) -> list[str]:
    return [str(b.get("callback_data")) for m in chat.last for b in m.buttons]


async def _bound(chat: TgStudent, ctx: AppContext) -> None:
    student, pesel = new_student(ctx)
    await chat.say("/start")
    await chat.press("lang:pl")
    await chat.say("tak, akceptuję")
    await chat.say(pesel)
    await chat.say(student.album)
    await chat.say(chat.binding_code())


async def test_terms_step_understands_typed_words(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    async with running_bot(ctx):
        chat = TgStudent(api, ctx, 5101)
        await chat.say("/start")
        await chat.press("lang:pl")
        await chat.say("44051401359")
        assert "Najpierw potrzebuję Twojej decyzji o regulaminie" in chat.text
        await chat.say("tak, akceptuję")
        assert "regulamin zaakceptowany" in chat.text and "PESEL" in chat.text


async def test_apply_typed_and_no_dead_ends(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    async with running_bot(ctx):
        chat = TgStudent(api, ctx, 5102)
        await _bound(chat, ctx)
        await chat.say("chcę złożyć wniosek")
        assert "Złożę wniosek o mLegitymację" in chat.text and "confirm:yes:request" in _buttons(chat)
        await chat.press("confirm:no")
        assert "menu:request" in _buttons(chat)  # Apply stays on the menu of a student without one
        await chat.say("czy mogę zapłacić za akademik w ratach")
        await chat.press("confirm:yes:support")
        assert "zgłoszenie nr" in chat.text and "menu:request" in _buttons(chat)  # the menu comes back


async def test_lost_phone_at_the_help_desk_prompt(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    async with running_bot(ctx):
        chat = TgStudent(api, ctx, 5103)
        await _bound(chat, ctx)
        await chat.say("wniosek")
        await chat.press("confirm:yes:request")
        await chat.say("czy mogę zapłacić za akademik w ratach")
        assert "confirm:yes:support" in _buttons(chat)
        await chat.say("zgubiłem telefon, co robić?")
        assert "Unieważnić mLegitymację z powodu zgubionego telefonu?" in chat.text
        await chat.press("confirm:yes:revoke")
        with Session(ctx.engine) as session:
            assert session.exec(select(Credential)).one().state == "revoked"
            assert session.exec(select(SupportThread)).all() == []
