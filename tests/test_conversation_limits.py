"""Guessing limits in the chat: per account and per student, with the time the lock lifts; no leaks."""

from __future__ import annotations

from core.app.context import AppContext
from core.storage.db import unit_of_work
from tests.chat_driver import ChatDriver
from tests.factories import add_student, student_pesel


def _student(ctx: AppContext):  # type: ignore[no-untyped-def]
    with unit_of_work(ctx.engine) as session:
        return add_student(session, ctx.box)


def test_pesel_format_problems_are_named(sqlite_ctx: AppContext) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("en")
    good = student_pesel(3)
    cases = {
        "123": "exactly 11 digits",
        "1234567890a": "digits only",
        good[:10] + str((int(good[10]) + 1) % 10): "wrong check digit",
    }
    for typed, phrase in cases.items():
        chat.say(typed)
        assert phrase in chat.text, typed
    chat.say("02223100129")  # 31 February 2002, check digit right
    assert "doesn't exist" in chat.text


def test_unknown_pesel_and_wrong_album_look_the_same(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    unknown, wrong = ChatDriver(sqlite_ctx), ChatDriver(sqlite_ctx)
    for chat, (typed_pesel, album) in ((unknown, (student_pesel(777), student.album)),
                                       (wrong, (pesel, "999999"))):
        chat.start_in("pl")
        chat.say(typed_pesel)
        chat.say(album)
    assert unknown.text == wrong.text
    assert "@" not in unknown.text


def test_five_wrong_identifications_lock_the_account_for_an_hour(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("en")
    for _ in range(5):
        chat.say(student_pesel(500))
        chat.say("111111")
    assert "Too many failed attempts" in chat.text and "05.10.2026 12:00" in chat.text  # 09:00 UTC + 1 h, Warsaw
    chat.say(pesel)  # even the right data waits
    assert "Too many failed attempts" in chat.text
    sqlite_ctx.clock.advance(hours=1, seconds=1)  # type: ignore[attr-defined]
    chat.say(pesel)
    chat.say(student.album)
    assert "one-time code" in chat.text


def test_guesses_against_one_student_are_limited_across_accounts(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    for _ in range(5):
        attacker = ChatDriver(sqlite_ctx)  # a new account each time
        attacker.start_in("en")
        attacker.say(pesel)
        attacker.say("000000")
    owner = ChatDriver(sqlite_ctx)
    owner.start_in("en")
    owner.say(pesel)
    owner.say(student.album)
    assert "Too many failed attempts" in owner.text


def test_five_wrong_email_codes_lock(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("en")
    chat.say(pesel)
    chat.say(student.album)
    code = chat.binding_code()
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(4):
        chat.say(wrong)
        assert "isn't right" in chat.text
    chat.say(wrong)
    assert "Too many failed attempts" in chat.text
    chat.say(code)
    assert "Too many failed attempts" in chat.text
    # Another account cannot go around it for the same student.
    other = ChatDriver(sqlite_ctx)
    other.start_in("en")
    other.say(pesel)
    other.say(student.album)
    other.say(other.binding_code())
    assert "Too many failed attempts" in other.text
