"""A language changed in a bound chat is saved on the chat link and reaches the jobs: reminders,
e-mails and notices come in the language the student chose last."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.app.context import AppContext
from core.app.settings import PROJECT_ROOT
from core.conversation import Event
from core.jobs import reminders, sweep
from core.messaging.outbox import open_body
from core.storage.db import unit_of_work
from core.storage.models import ChatLink
from core.understanding.catalog import IntentCatalog
from tests.chat_driver import ChatDriver
from tests.factories import add_student
from tests.support.chat import bound_chat
from tests.support.lifecycle import at, queued

# --- a language changed in a bound chat reaches the jobs ------------------------------------------

def _change_language(chat: ChatDriver, language: str, *, by_command: bool) -> None:
    if by_command:
        chat.say("/language")
    else:
        chat.say("/status")
        chat.say("/lang")
    chat.press(f"lang:{language}")


@pytest.mark.parametrize("by_command", [True, False])
def test_language_changed_in_a_bound_chat_is_saved_on_the_link(sqlite_ctx: AppContext, by_command: bool) -> None:
    chat, _ = bound_chat(sqlite_ctx, "pl")
    _change_language(chat, "en", by_command=by_command)
    assert "Language: English." in chat.text
    with Session(sqlite_ctx.engine) as session:
        [link] = session.exec(select(ChatLink)).all()
    assert link.language == "en"


def test_chat_reminder_after_the_change_comes_in_the_new_language(ctx: AppContext) -> None:
    at(ctx, "2026-11-05T10:00:00+01:00")  # deadline 5 December 10:00
    chat, _ = bound_chat(ctx, "pl", channel="telegram")
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    _change_language(chat, "en", by_command=True)
    at(ctx, "2026-11-28T10:00:00+01:00")
    reminders(ctx)
    [reminder] = queued(ctx, "reminder")
    assert (reminder.channel, reminder.language) == ("telegram", "en")
    assert "Your mobile student ID (mLegitymacja) is waiting to be activated" in open_body(ctx.box, reminder).text


def test_e_mail_after_the_change_comes_in_the_new_language(sqlite_ctx: AppContext) -> None:
    at(sqlite_ctx, "2026-11-05T10:00:00+01:00")
    chat, _ = bound_chat(sqlite_ctx, "en")  # the console: reminders go by e-mail
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    _change_language(chat, "pl", by_command=True)
    at(sqlite_ctx, "2026-11-28T10:00:00+01:00")
    reminders(sqlite_ctx)
    [reminder] = queued(sqlite_ctx, "reminder")
    assert (reminder.channel, reminder.language) == ("email", "pl")
    assert open_body(sqlite_ctx.box, reminder).text.startswith("Dzień dobry")


def test_the_newest_choice_wins_over_a_link_bound_later(sqlite_ctx: AppContext) -> None:
    """Two accounts of one student: the language chosen last, not the account bound last, is the e-mail's."""
    at(sqlite_ctx, "2026-11-05T10:00:00+01:00")
    with unit_of_work(sqlite_ctx.engine) as session:
        student = add_student(session, sqlite_ctx.box)
    first, _ = bound_chat(sqlite_ctx, "pl", channel="telegram", student=student)
    sqlite_ctx.clock.advance(minutes=5)  # type: ignore[attr-defined]
    second, _ = bound_chat(sqlite_ctx, "pl", channel="console", student=student)
    second.press("menu:request")
    second.press("confirm:yes:request")
    sqlite_ctx.clock.advance(minutes=5)  # type: ignore[attr-defined]
    _change_language(first, "en", by_command=True)
    sqlite_ctx.clock.advance(days=31)  # type: ignore[attr-defined]
    assert sweep(sqlite_ctx)["activation_expired"] == 1
    notices = {row.channel: row for row in queued(sqlite_ctx, "activation_expired")}
    assert (notices["email"].language, notices["telegram"].language) == ("en", "en")
    assert open_body(sqlite_ctx.box, notices["email"]).text.startswith("Hello")


# --- the language typed instead of tapped ---------------------------------------------------------

@pytest.mark.parametrize("typed,language", [
    ("polski", "pl"), ("Po polsku", "pl"), ("jezyk polski", "pl"), ("English", "en"), ("po angielsku", "en"),
])
def test_a_language_named_in_words_is_chosen(sqlite_ctx: AppContext, typed: str, language: str) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.say("/start")
    chat.say(typed)
    assert "terms:accept" in chat.buttons
    assert sqlite_ctx.catalog.text(language, "intro") in chat.text
    assert sqlite_ctx.catalog.text(language, "language.guessed") not in chat.text  # named, not guessed


@pytest.mark.parametrize("typed,language", [
    ("chcę legitymację", "pl"), ("chce mlegitymacje na telefon", "pl"), ("I need my student ID", "en"),
])
def test_a_message_in_one_language_is_taken_in_it_and_says_how_to_change(sqlite_ctx: AppContext, typed: str,
                                                                          language: str) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.say("/start")
    chat.say(typed)
    assert chat.text.startswith(sqlite_ctx.catalog.text(language, "language.guessed"))
    assert "/language" in chat.text
    assert sqlite_ctx.catalog.text(language, "intro") in chat.text and "terms:accept" in chat.buttons


def test_one_word_that_tells_no_language_asks_again_with_what_to_type(sqlite_ctx: AppContext) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.say("/start")
    for typed in ("ok", "start", "hej", "12345678901"):
        chat.say(typed)
        assert chat.text.startswith(sqlite_ctx.catalog.text("pl", "language.hint")), typed
        assert chat.buttons == ["lang:pl", "lang:en"]


def test_one_word_in_the_language_of_the_students_app_is_enough(sqlite_ctx: AppContext) -> None:
    """Telegram tells the app's language (language_code): "hej" from a Polish phone is Polish."""
    chat = ChatDriver(sqlite_ctx)
    chat.send(Event.text_message(chat.channel, chat.account, "/start", language_hint="pl"))
    chat.send(Event.text_message(chat.channel, chat.account, "hej", language_hint="pl"))
    assert chat.text.startswith(sqlite_ctx.catalog.text("pl", "language.guessed"))


def test_the_names_a_language_goes_by_are_the_catalogs(tmp_path: Path) -> None:
    catalog = IntentCatalog.load(PROJECT_ROOT / "config" / "intents.toml")
    assert catalog.language_names["jezyk polski"] == "pl" and catalog.language_names["in english"] == "en"
    bad = tmp_path / "intents.toml"
    bad.write_text((PROJECT_ROOT / "config" / "intents.toml").read_text(encoding="utf-8")
                   .replace('[language]\npl = ', '[language]\nde = ["deutsch"]\npl = '), encoding="utf-8")
    with pytest.raises(ValueError, match=r"\[language\] names the languages pl, en, not de"):
        IntentCatalog.load(bad)


def test_a_command_at_the_language_question_chooses_nothing(sqlite_ctx: AppContext) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.send(Event.text_message(chat.channel, chat.account, "/start", language_hint="en"))
    chat.send(Event.text_message(chat.channel, chat.account, "/help", language_hint="en"))
    assert chat.text.startswith(sqlite_ctx.catalog.text("en", "language.hint"))
    assert chat.buttons == ["lang:pl", "lang:en"]
