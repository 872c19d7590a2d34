"""A language changed in a bound chat is saved on the chat link and reaches the jobs: reminders,
e-mails and notices come in the language the student chose last."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from core.app.context import AppContext
from core.jobs import reminders, sweep
from core.messaging.outbox import open_body
from core.storage.db import unit_of_work
from core.storage.models import ChatLink
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
