"""Every input gets an answer and nothing raises: odd text, stickers, stale buttons, random events."""

from __future__ import annotations

import itertools
from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from core.app.catalog import Catalog
from core.app.context import AppContext
from core.app.settings import PROJECT_ROOT
from core.conversation import ConversationState, Event, ops
from core.conversation.engine import EngineConfig, step
from core.conversation.terms import load_terms
from core.storage.db import unit_of_work
from core.storage.models import (
    Credential,
    GuessAttempt,
)
from core.students.eligibility import Policy
from core.support.faq import Faq
from tests.chat_driver import ChatDriver
from tests.factories import add_student
from tests.support.chat import bound_chat, new_student
from tests.support.lifecycle import enrolled

ODD_INPUTS = [
    "", "   ", "\x00\x01\x02", "😀😀😀", "x" * 10_000, "'; DROP TABLE student; --", "<b>hi</b>",
    "\u202eevil", "/", "/unknown_cmd", "/start@mleg_bot", "12345678901234567890", "ąęśćżźńłó", "\n\n\n",
]


@pytest.mark.parametrize("text", ODD_INPUTS)
def test_odd_text_in_every_step(sqlite_ctx: AppContext, text: str) -> None:
    with unit_of_work(sqlite_ctx.engine) as session:
        student, pesel = add_student(session, sqlite_ctx.box)
    script = ["/start", "lang:pl", "terms:accept", pesel, student.album, "CODE", "menu:request", "confirm:yes:request"]
    for depth in range(len(script) + 1):
        chat = ChatDriver(sqlite_ctx)
        for action in script[:depth]:
            if action == "CODE":
                chat.say(chat.binding_code())
            elif ":" in action:
                chat.press_anyway(action)
            else:
                chat.say(action)
        step_name = chat.service.state_of("console", chat.account).step
        chat.say(text)
        assert chat.text.strip(), f"empty reply to {text!r} in step {step_name}"


def test_unsupported_messages_are_answered(sqlite_ctx: AppContext) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.send(Event(kind="unsupported", channel="console", account_id=chat.account, text="sticker"))
    assert "naklejek" in chat.text or "stickers" in chat.text


def test_stale_and_forged_buttons_are_harmless(sqlite_ctx: AppContext) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.say("/start")
    for data in ("menu:request", "confirm:yes:request", "revoke:lost_phone", "forget:yes", "lang:xx", "staff:close:1"):
        chat.press_anyway(data)
        assert chat.text
    assert chat.outbox("activation") == []


# --- the engine alone, with storage answered from a script ------------------------------------

def _config() -> EngineConfig:
    config_dir = PROJECT_ROOT / "config"
    return EngineConfig(
        catalog=Catalog.load(config_dir / "messages"), faq=Faq.load(config_dir / "faq"),
        terms=load_terms(config_dir / "terms"), policy=Policy.STANDALONE, pesel_hasher=lambda p: "h:" + p,
    )


def _answer(op: ops.Op) -> Any:
    """A scripted storage: nobody matches, nothing is locked."""
    if isinstance(op, ops.CheckLocked | ops.RecordWrongGuess | ops.MatchStudent):
        return None
    if isinstance(op, ops.VerifyBindingCode):
        return ("none", None)
    return None


def _run(flow: Generator[ops.Op, Any, Any]) -> Any:
    try:
        request = next(flow)
        while True:
            request = flow.send(_answer(request))
    except StopIteration as finished:
        return finished.value


def test_engine_is_pure_and_never_sees_a_clear_pesel_in_state() -> None:
    config = _config()
    state = ConversationState()
    now = datetime(2026, 10, 5, tzinfo=UTC)
    for event in (
        Event.text_message("t", "1", "/start"),
        Event(kind="button", channel="t", account_id="1", text="lang:en"),
        Event(kind="button", channel="t", account_id="1", text="terms:accept"),
        Event.text_message("t", "1", "02070803628"),
    ):
        replies = _run(step(config, state, event, now))
        assert replies
    assert state.step == "second_id" and state.pesel_hash == "h:02070803628"
    state.pesel_hash = "h"
    assert "02070803628" not in state.to_json()


_events = st.one_of(
    st.builds(lambda t: Event.text_message("t", "1", t), st.text(max_size=300)),
    st.builds(lambda d: Event(kind="button", channel="t", account_id="1", text=d), st.sampled_from([
        "lang:pl", "lang:en", "terms:accept", "terms:decline", "terms:full", "terms:review", "menu:status",
        "menu:request", "menu:renew", "menu:revoke", "menu:help", "menu:support", "confirm:yes:request", "confirm:no",
        "confirm:yes:renew", "confirm:yes:revoke", "confirm:yes:support", "confirm:yes",
        "revoke:lost_phone", "help:next", "help:step", "help:all", "code:resend", "forget:yes", "cancel", "junk",
    ])),
    st.builds(lambda c: Event.text_message("t", "1", "/" + c), st.sampled_from([
        "start", "status", "renew", "revoke", "help", "support", "language", "forget", "terms", "cancel", "x",
    ])),
    st.just(Event(kind="unsupported", channel="t", account_id="1", text="photo")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_events, min_size=1, max_size=25))
def test_random_events_in_any_state_never_raise_and_always_reply(events: list[Event]) -> None:
    config = _config()
    state = ConversationState()
    now = datetime(2026, 10, 5, tzinfo=UTC)
    for event in events:
        replies = _run(step(config, state, event, now))
        assert replies and all(r.text.strip() for r in replies)
        ConversationState.from_json(state.to_json())


_accounts = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_events, min_size=1, max_size=12))
def test_random_events_against_real_storage(sqlite_ctx: AppContext, events: list[Event]) -> None:
    chat = ChatDriver(sqlite_ctx, account=f"fuzz-{next(_accounts)}")
    for event in events:
        replies = chat.service.handle(Event(kind=event.kind, channel="console", account_id=chat.account,
                                            text=event.text))
        assert replies and all(r.text.strip() for r in replies)


# --- the chat code that did not arrive ------------------------------------------------------------

@pytest.mark.parametrize(("lang", "question", "expected"), [
    ("en", "The email with the code did not arrive", ("a***@student.example.edu.pl", "15 min", "Spam")),
    ("pl", "Nie dostałem maila z kodem", ("a***@student.example.edu.pl", "15 min", "SPAM")),
])
def test_at_the_code_step_a_missing_mail_is_about_the_chat_code(
        sqlite_ctx: AppContext, lang: str, question: str, expected: tuple[str, ...]) -> None:
    _, pesel, album = enrolled(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in(lang)
    chat.say(pesel)
    chat.say(album)
    chat.say(question)
    for part in expected:
        assert part in chat.text, chat.text
    assert "/status" not in chat.text  # refused before binding
    assert "hour" not in chat.text and "godzin" not in chat.text  # the code lives 15 minutes
    assert "code:resend" in chat.buttons
    chat.press("code:resend")
    assert len(chat.outbox("binding-code")) == 2


def test_before_binding_an_expired_code_question_is_about_the_chat_code(sqlite_ctx: AppContext) -> None:
    _, pesel, album = enrolled(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("en")
    chat.say(pesel)
    chat.say(album)
    chat.say("My code expired, what now?")
    assert "15 min" in chat.text and "30 days" not in chat.text and "code:resend" in chat.buttons


# --- ELS numbers typed by hand -----------------------------------------------------------------

@pytest.mark.parametrize("typed", ["99892850", "els 99892850", "ELS-99892850", "Els–9989 2850"])
def test_els_number_is_matched_however_it_is_typed(els_ctx: AppContext, typed: str) -> None:
    _, pesel = new_student(els_ctx, els_number="ELS-99892850")
    chat = ChatDriver(els_ctx)
    chat.start_in("en")
    chat.say(pesel)
    assert "e.g. ELS-12345678" in chat.text
    chat.say(typed)
    assert "A one-time code has been sent" in chat.text


def test_under_the_els_policy_words_at_the_number_get_where_the_els_number_is(els_ctx: AppContext) -> None:
    _, pesel = new_student(els_ctx, els_number="ELS-99892850")
    chat = ChatDriver(els_ctx)
    chat.start_in("en")
    chat.say(pesel)
    chat.say("which number do you mean?")
    assert "The ELS number is printed on your plastic student ID card" in chat.text
    assert chat.text.endswith(els_ctx.catalog.text("en", "identify.ask_els")) and _guesses(els_ctx) == 0
    chat.say("my card says ELS 9989 2850")  # the number in a sentence, spaced as printed
    assert "A one-time code has been sent" in chat.text


def test_wrong_els_number_still_counts_as_a_failed_guess(els_ctx: AppContext) -> None:
    _, pesel = new_student(els_ctx, els_number="ELS-99892850")
    chat = ChatDriver(els_ctx)
    chat.start_in("pl")
    chat.say(pesel)
    assert "np. ELS-12345678" in chat.text
    chat.say("ELS 99892851")
    assert "nie pasują do rejestru" in chat.text
    with Session(els_ctx.engine) as session:
        assert len(session.exec(select(GuessAttempt)).all()) >= 1


# --- not a code, not a command -------------------------------------------------------------------

def test_text_that_is_no_code_is_not_a_guess(sqlite_ctx: AppContext) -> None:
    student, pesel = new_student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("en")
    chat.say(pesel)
    chat.say(student.album)
    for typed in ["abc", "12345", "1234567", "no idea"] * 3:  # twelve: over the five-guess limit
        chat.say(typed)
        assert "6 digits" in chat.text and "isn't right" not in chat.text, typed
    chat.say(" ".join(chat.binding_code()))  # "1 2 3 4 5 6" is the code, typed with spaces
    assert "Too many" not in chat.text
    assert chat.service.state_of(chat.channel, chat.account).student_id == student.id


def _where_the_numbers_are(ctx: AppContext, language: str) -> str:
    entry = ctx.faq.get(language, "identity_numbers")
    assert entry is not None
    return entry.answer_for(ctx.settings.policy)


def _guesses(ctx: AppContext) -> int:
    with Session(ctx.engine) as session:
        return len(session.exec(select(GuessAttempt)).all())


def test_no_number_at_the_album_step_is_no_guess_and_keeps_the_pesel(sqlite_ctx: AppContext) -> None:
    """"nie wiem, jaki mam numer albumu" was matched against the register as an album: a failed
    guess, and the PESEL asked for again. Now: where the number is, and the album asked again."""
    student, pesel = new_student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("pl")
    chat.say(pesel)
    chat.say("nie wiem, skąd go wziąć")
    assert chat.text.startswith(_where_the_numbers_are(sqlite_ctx, "pl"))
    # Numbers with words between them: which one is the album? None is tried (an FAQ answer may come).
    chat.say(f"PESEL {pesel}, czyli {pesel[:6]} {pesel[6:]}, albo co?")
    assert chat.text.endswith(sqlite_ctx.catalog.text("pl", "identify.ask_album"))
    assert _guesses(sqlite_ctx) == 0
    chat.say(f"mój numer albumu to {student.album}.")  # the number in a sentence is the number
    assert chat.outbox("binding-code")  # matched: the chat code is mailed


def test_the_pesel_step_takes_the_number_out_of_a_sentence_and_helps_without_one(sqlite_ctx: AppContext) -> None:
    _, pesel = new_student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("en")
    chat.say("no idea honestly")  # not a question the FAQ knows: where the numbers are, all the same
    assert chat.text.startswith(_where_the_numbers_are(sqlite_ctx, "en"))
    chat.say(f"my PESEL is {pesel[:3]} {pesel[3:6]} {pesel[6:]}.")
    assert chat.text == sqlite_ctx.catalog.text("en", "identify.ask_album")
    assert _guesses(sqlite_ctx) == 0


def test_a_question_at_the_code_step_is_answered_and_the_code_asked_again(sqlite_ctx: AppContext) -> None:
    student, pesel = new_student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("en")
    chat.say(pesel)
    chat.say(student.album)
    chat.say("The activation email did not arrive, I checked spam")
    assert "6 digits" in chat.text and len(chat.replies) >= 2


@pytest.mark.parametrize("language,phrase", [("en", "I don't know that command"), ("pl", "Nie znam")])
def test_unknown_command_before_binding_is_said(sqlite_ctx: AppContext, language: str, phrase: str) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.start_in(language)
    chat.say("/foo")
    assert phrase in chat.text and "PESEL" in chat.text


# --- a yes button confirms only what it was put under ---------------------------------------------

def test_an_old_confirm_under_the_application_does_not_revoke(sqlite_ctx: AppContext) -> None:
    chat, student = bound_chat(sqlite_ctx, "en")
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    chat.say("/revoke")
    chat.press("revoke:lost_phone")
    assert "confirm:yes:revoke" in chat.buttons
    chat.press_anyway("confirm:yes:request")  # scrolled up and pressed the application's "Confirm"
    with Session(sqlite_ctx.engine) as session:
        states = session.exec(select(Credential.state).where(Credential.student_id == student.id)).all()
    assert states == ["pending_activation"]
    assert "confirm:yes:revoke" in chat.buttons  # asked again, with the right button
    chat.press("confirm:yes:revoke")
    with Session(sqlite_ctx.engine) as session:
        assert session.exec(select(Credential.state).where(Credential.student_id == student.id)).one() == "revoked"


def test_a_yes_button_from_before_the_upgrade_asks_again(sqlite_ctx: AppContext) -> None:
    chat, _ = bound_chat(sqlite_ctx, "pl")
    chat.press("menu:request")
    chat.press_anyway("confirm:yes")  # the data every yes button had before
    assert "confirm:yes:request" in chat.buttons
