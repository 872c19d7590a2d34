"""A student's whole journey in Telegram, through the real PTB Application and the Bot API stand-in."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.storage.models import ChatLink, Credential
from tests.bot_harness import TgStudent, bot_context, new_student, outbox_rows, running_bot
from tests.servers.botapi import BotApiStandIn

pytestmark = pytest.mark.timeout(60)


async def test_start_to_activation_email(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    student, pesel = new_student(ctx)
    async with running_bot(ctx):
        chat = TgStudent(api, ctx, 4242)
        await chat.say("/start")
        assert any("lang:pl" in str(m.buttons) for m in chat.last)
        await chat.press("lang:pl")
        assert "Regulamin" in chat.text
        await chat.press("terms:accept")
        assert "PESEL" in chat.text
        await chat.say(pesel)
        assert "album" in chat.text
        await chat.say(student.album)
        assert "a***@student.example.edu.pl" in chat.text
        await chat.say(chat.binding_code())
        assert "menu:request" in str([m.buttons for m in chat.last])
        await chat.press("menu:request")
        await chat.press("confirm:yes:request")
        assert "Wniosek przyjęty" in chat.text

        [activation] = outbox_rows(ctx, kind="activation")
        assert activation.recipient == student.email and activation.channel == "email"
        with Session(ctx.engine) as session:
            link = session.exec(select(ChatLink)).one()
            assert (link.channel, link.account_id, link.student_id) == ("telegram", "4242", student.id)
            assert session.exec(select(Credential)).one().state == "pending_activation"

        # Every reply went out as escaped HTML, every button press was answered at once.
        assert all(m.parse_mode == "HTML" for m in api.sent_messages(4242))
        answers = api.calls("answerCallbackQuery")
        assert len(answers) == 4 and all(c.ok for c in answers)
        # Every chat row was sent once: nothing left, nothing doubled.
        rows = outbox_rows(ctx, channel="telegram")
        assert {r.status for r in rows} == {"sent"} and len(rows) == len(api.sent_messages(4242))
    # The clear PESEL and code were never sent to Telegram.
    assert not any(pesel in (m.plain_text or "") for m in api.sent_messages())


async def test_commands_registered_in_both_languages(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    async with running_bot(ctx):
        scope = {"type": "all_private_chats"}
        polish = api.commands(scope=scope, language_code="pl")
        english = api.commands(scope=scope, language_code="en")
        default = api.commands(scope=scope)
    names = ["start", "request", "status", "renew", "revoke", "help", "support", "terms", "language", "cancel",
             "forget"]
    assert [c["command"] for c in polish] == names == [c["command"] for c in english]
    assert polish != english and default == polish  # the university's default language is Polish


async def test_english_speaker_and_a_sticker(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    async with running_bot(ctx):
        chat = TgStudent(api, ctx, 4343, language_code="en-GB")
        await chat.say("/start")
        api.push_sticker(4343, 4343, language_code="en")
        await chat.replies()
        # Before a language is chosen, the account's (English) is used: the English text, then the question.
        assert chat.text.strip() == "\n\n".join([ctx.catalog.text("en", "unsupported"),
                                                  ctx.catalog.text("en", "language.choose")])


async def test_an_edited_message_is_answered_not_ignored(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    """Correcting a typo by editing: the bot says to send it anew instead of staying silent."""
    ctx = bot_context(tmp_path, sqlite_url, api)
    async with running_bot(ctx):
        chat = TgStudent(api, ctx, 4545, language_code="en")
        await chat.say("/start")
        await chat.press("lang:en")
        before = len(api.sent_messages(4545))
        api.push_update({"edited_message": {
            "message_id": 1, "date": 1_790_000_000, "edit_date": 1_790_000_060, "text": "12345678901",
            "chat": {"id": 4545, "type": "private", "first_name": "Anna"},
            "from": {"id": 4545, "is_bot": False, "first_name": "Anna", "language_code": "en"},
        }})
        [answer] = (await api.await_messages(4545, before + 1))[before:]
    assert answer.plain_text == ctx.catalog.text("en", "edited_message")
