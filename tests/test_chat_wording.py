"""Defects a QA round found in the chat: /forget, dead activation data, removal end dates, ELS cards, help, wording."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import credentials
from core.clock import FixedClock
from core.context import AppContext
from core.db import make_engine, unit_of_work
from core.eligibility import SHORT_VALIDITY_DAYS
from core.jobs import sweep
from core.models import (
    BindingCode,
    ChatLink,
    Credential,
    CredentialEvent,
    GuessAttempt,
    Student,
    TermsAcceptance,
)
from core.outbox import open_body
from core.semester import end_of_day
from tests.chat_driver import ChatDriver
from tests.factories import activation_code, add_student, build_ctx, make_settings


def _student(ctx: AppContext, **kw: object) -> tuple[Student, str]:
    with unit_of_work(ctx.engine) as session:
        return add_student(session, ctx.box, **kw)


def _bound(ctx: AppContext, language: str = "pl", **kw: object) -> tuple[ChatDriver, Student]:
    student, pesel = _student(ctx, **kw)
    chat = ChatDriver(ctx)
    second = str(kw.get("els_number", student.album)) if ctx.settings.policy == "els" else student.album
    chat.identify(pesel, second, language)
    return chat, student


def _credentials(ctx: AppContext) -> list[Credential]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(Credential).order_by(col(Credential.id))).all())


def _links(ctx: AppContext) -> list[ChatLink]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(ChatLink)).all())


@pytest.fixture
def els_ctx(tmp_path: Path, sqlite_url: str, clock: FixedClock) -> Iterator[AppContext]:
    engine = make_engine(sqlite_url)
    yield build_ctx(make_settings(tmp_path, database_url=sqlite_url, policy="els"), engine, clock)
    engine.dispose()


# --- 1, 2: /forget ---------------------------------------------------------------------------

@pytest.mark.parametrize("bound", [True, False])
def test_forget_is_confirmed_in_the_language_the_student_used(sqlite_ctx: AppContext, bound: bool) -> None:
    if bound:
        chat, _ = _bound(sqlite_ctx, "en")
    else:
        chat = ChatDriver(sqlite_ctx)
        chat.start_in("en")
    chat.say("/forget")
    chat.press("forget:yes")
    assert "Done: the conversation data is deleted" in chat.text
    assert "Gotowe" not in chat.text


def test_gone_student_is_told_in_their_language(sqlite_ctx: AppContext) -> None:
    chat, student = _bound(sqlite_ctx, "en")
    with unit_of_work(sqlite_ctx.engine) as session:
        for model in (ChatLink, TermsAcceptance, BindingCode):
            session.execute(sa.delete(model).where(model.student_id == student.id))  # type: ignore[arg-type]
        session.delete(session.get(Student, student.id))
    chat.say("/status")
    assert "I can no longer find you in the student register" in chat.text


@pytest.mark.parametrize("word", ["tak", "yes", "t", "y", "ok", "Tak!"])
def test_typed_yes_confirms_forget(sqlite_ctx: AppContext, word: str) -> None:
    chat, _ = _bound(sqlite_ctx)
    chat.say("/forget")
    chat.say(word)
    assert "dane rozmowy usunięte" in chat.text
    assert _links(sqlite_ctx) == []


@pytest.mark.parametrize("word", ["nie", "no"])
def test_typed_no_cancels_forget_and_shows_the_menu(sqlite_ctx: AppContext, word: str) -> None:
    chat, _ = _bound(sqlite_ctx)
    chat.say("/forget")
    chat.say(word)
    assert "Anulowano" in chat.text and "menu:status" in chat.buttons
    assert len(_links(sqlite_ctx)) == 1


def test_other_text_at_forget_asks_again_instead_of_cancelling(sqlite_ctx: AppContext) -> None:
    chat, _ = _bound(sqlite_ctx, "en")
    chat.say("/forget")
    chat.say("hmm, what does that mean?")
    assert "Please answer \"yes\"" in chat.text and "forget:yes" in chat.buttons
    assert "Cancelled" not in chat.text
    assert chat.service.state_of("console", chat.account).step == "confirm_forget"
    chat.say("yes")
    assert "Done: the conversation data is deleted" in chat.text and _links(sqlite_ctx) == []


def test_typed_yes_confirms_forget_before_the_terms_are_accepted(sqlite_ctx: AppContext) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.say("/start")
    chat.press("lang:pl")
    chat.say("/forget")
    chat.say("tak")
    assert "dane rozmowy usunięte" in chat.text and "Regulamin usługi zmienił się" not in chat.text


# --- 3: activation data past its deadline -------------------------------------------------------

def _request(chat: ChatDriver) -> None:
    chat.press("menu:request")
    chat.press("confirm:yes:request")


def test_activation_past_its_deadline_expires_when_the_student_asks(ctx: AppContext) -> None:
    """On SQLite and PostgreSQL: the turn locks the row as the sweep does."""
    chat, _ = _bound(ctx, "en")
    _request(chat)
    ctx.clock.advance(days=30, minutes=1)  # type: ignore[attr-defined]
    chat.say("/status")
    assert "expired (activation data not used within 30 days)" in chat.text
    assert "Activate" not in chat.text and "menu:request" in chat.buttons
    [ended] = _credentials(ctx)
    assert (ended.state, ended.end_reason, ended.code_hash) == ("expired", "activation_window_passed", None)
    with Session(ctx.engine) as session:
        events = session.exec(select(CredentialEvent).where(CredentialEvent.credential_id == ended.id)).all()
    assert [(e.from_state, e.to_state, e.reason) for e in events][-1] == (
        "pending_activation", "expired", "activation_window_passed")
    assert sweep(ctx)["activation_expired"] == 0  # one move, not two
    chat.say("/request")
    assert "already have activation data" not in chat.text and "confirm:yes:request" in chat.buttons
    chat.press("confirm:yes:request")
    assert "Application accepted" in chat.text
    assert [c.state for c in _credentials(ctx)] == ["expired", "pending_activation"]


def test_request_straight_after_the_deadline_is_a_new_application(sqlite_ctx: AppContext) -> None:
    chat, _ = _bound(sqlite_ctx)
    _request(chat)
    sqlite_ctx.clock.advance(days=31)  # type: ignore[attr-defined]
    chat.say("/request")
    assert "Masz już wysłane dane aktywacyjne" not in chat.text and "confirm:yes:request" in chat.buttons


def test_activation_still_within_its_deadline_stays_pending(sqlite_ctx: AppContext) -> None:
    chat, _ = _bound(sqlite_ctx)
    _request(chat)
    sqlite_ctx.clock.advance(days=29)  # type: ignore[attr-defined]  # a day before the 30-day deadline
    chat.say("/status")
    assert "Aktywuj mLegitymację w mObywatelu do" in chat.text
    assert [c.state for c in _credentials(sqlite_ctx)] == ["pending_activation"]


# --- 4: removal from the student list ------------------------------------------------------------

def _activate(ctx: AppContext, chat: ChatDriver) -> None:
    with unit_of_work(ctx.engine) as session:
        credential = session.exec(select(Credential)).one()
        text = open_body(ctx.box, chat.outbox("activation")[0]).text
        code = activation_code(text)
        credentials.activate(ctx, session, credential, code, actor="test")


@pytest.mark.parametrize(("language", "phrases"), [
    ("pl", ("aktywna i ważna do 20.10.2026", "najpóźniej 20.10.2026")),
    ("en", ("active and valid until 20.10.2026", "ends on 20.10.2026")),
])
def test_removed_students_status_shows_the_removal_deadline(
    sqlite_ctx: AppContext, language: str, phrases: tuple[str, str],
) -> None:
    chat, student = _bound(sqlite_ctx, language)
    _request(chat)
    _activate(sqlite_ctx, chat)
    with unit_of_work(sqlite_ctx.engine) as session:
        row = session.get(Student, student.id)
        assert row is not None
        row.status, row.removed_on = "removed", date(2026, 9, 20)  # the removal deadline is 20 October
        session.add(row)
    chat.say("/status")
    assert all(phrase in chat.text for phrase in phrases), chat.text
    assert "31.03.2027" not in chat.text  # the semester's end, later than the removal deadline


# --- 5: ELS policy: the activation window and a card that ends soon ---------------------------

def test_els_activation_deadline_never_outlasts_the_credential(els_ctx: AppContext) -> None:
    chat, _ = _bound(els_ctx, "en", els_number="ELS-00001234", els_valid_until=date(2026, 10, 20))
    _request(chat)
    assert "by 20.10.2026 23:59; it will be valid until 20.10.2026" in chat.text
    [credential] = _credentials(els_ctx)
    assert credential.activation_deadline == end_of_day(date(2026, 10, 20))
    assert "20.10.2026 23:59" in open_body(els_ctx.box, chat.outbox("activation")[0]).text


def test_els_card_ending_soon_is_announced_before_applying(els_ctx: AppContext) -> None:
    until = els_ctx.clock.today() + timedelta(days=SHORT_VALIDITY_DAYS - 2)
    chat, _ = _bound(els_ctx, "pl", els_number="ELS-00004321", els_valid_until=until)
    chat.press("menu:request")
    assert f"ELS jest ważna tylko do {until:%d.%m.%Y}" in chat.text and "(łącznie 6 dni)" in chat.text
    chat.press("confirm:yes:request")  # they may still apply
    assert "Wniosek przyjęty" in chat.text
    [credential] = _credentials(els_ctx)
    assert credential.valid_until == until and credential.activation_deadline == end_of_day(until)


def test_els_card_valid_long_enough_brings_no_warning(els_ctx: AppContext) -> None:
    until = els_ctx.clock.today() + timedelta(days=SHORT_VALIDITY_DAYS)
    chat, _ = _bound(els_ctx, "en", els_number="ELS-00005555", els_valid_until=until)
    chat.press("menu:request")
    assert "ELS card is valid only" not in chat.text


# --- 6: ELS numbers typed by hand -----------------------------------------------------------------

@pytest.mark.parametrize("typed", ["99892850", "els 99892850", "ELS-99892850", "Els–9989 2850"])
def test_els_number_is_matched_however_it_is_typed(els_ctx: AppContext, typed: str) -> None:
    _, pesel = _student(els_ctx, els_number="ELS-99892850")
    chat = ChatDriver(els_ctx)
    chat.start_in("en")
    chat.say(pesel)
    assert "e.g. ELS-12345678" in chat.text
    chat.say(typed)
    assert "I sent a one-time code" in chat.text


def test_wrong_els_number_still_counts_as_a_failed_guess(els_ctx: AppContext) -> None:
    _, pesel = _student(els_ctx, els_number="ELS-99892850")
    chat = ChatDriver(els_ctx)
    chat.start_in("pl")
    chat.say(pesel)
    assert "np. ELS-12345678" in chat.text
    chat.say("ELS 99892851")
    assert "nie pasują do rejestru" in chat.text
    with Session(els_ctx.engine) as session:
        assert len(session.exec(select(GuessAttempt)).all()) >= 1


# --- 7: /help lists what works in each state -----------------------------------------------------

@pytest.mark.parametrize("language", ["pl", "en"])
def test_help_before_binding_lists_the_commands_that_work(sqlite_ctx: AppContext, language: str) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.start_in(language)
    chat.say("/help")
    for command in ("/request", "/terms", "/cancel", "/language", "/forget", "/help"):
        assert command in chat.text, command
    assert "/renew" not in chat.text


@pytest.mark.parametrize("language", ["pl", "en"])
def test_help_before_the_terms_are_accepted(sqlite_ctx: AppContext, language: str) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.say("/start")
    chat.press(f"lang:{language}")
    chat.say("/help")
    assert "/terms" in chat.text and "terms:accept" in chat.buttons


@pytest.mark.parametrize("language", ["pl", "en"])
def test_help_after_binding_lists_commands_and_still_offers_activation_help(
    sqlite_ctx: AppContext, language: str,
) -> None:
    chat, _ = _bound(sqlite_ctx, language)
    chat.say("/help")
    for command in ("/status", "/request", "/renew", "/revoke", "/support", "/terms", "/cancel", "/forget"):
        assert command in chat.text, command
    assert "help:step" in chat.buttons
    chat.press("menu:status")
    chat.press("menu:help")  # the "How to activate" button: activation only
    assert "/renew" not in chat.text and "help:step" in chat.buttons


# --- 8, 9: small things ---------------------------------------------------------------------------

def test_single_ineligibility_reason_ends_with_a_full_stop(sqlite_ctx: AppContext) -> None:
    chat, _ = _bound(sqlite_ctx, "en", status="graduated")
    assert "• your studies have ended." in chat.text
    assert ";" not in chat.text.split("You cannot have")[1]


def test_several_ineligibility_reasons_are_a_punctuated_list(sqlite_ctx: AppContext) -> None:
    chat, _ = _bound(sqlite_ctx, "pl", study_level="doctoral", status="suspended")
    assert "Nie możesz teraz otrzymać mLegitymacji:" in chat.text
    assert "Teraz nie możesz" not in chat.text
    assert "nie przysługuje;\n• Twój status studenta jest zawieszony — wyjaśnij to w dziekanacie." in chat.text


def test_cancel_shows_the_menu(sqlite_ctx: AppContext) -> None:
    chat, _ = _bound(sqlite_ctx, "en")
    chat.press("menu:request")
    chat.press("confirm:no")
    assert "Cancelled." in chat.text and "menu:status" in chat.buttons
    chat.say("/cancel")
    assert "Cancelled." in chat.text and "menu:support" in chat.buttons


@pytest.mark.parametrize(("language", "said", "unsaid"), [
    ("pl", ("Przedłużenie nie jest możliwe", "doktoranci"), "złóż wniosek"),
    ("en", ("Renewal is not possible", "doctoral students"), "apply"),
])
def test_renew_for_a_student_who_may_not_have_one_says_why(
    sqlite_ctx: AppContext, language: str, said: tuple[str, str], unsaid: str,
) -> None:
    chat, _ = _bound(sqlite_ctx, language, study_level="doctoral")
    chat.say("/renew")
    assert all(phrase in chat.text for phrase in said), chat.text
    assert unsaid not in chat.text


def test_polish_e_mail_greeting_has_its_comma(sqlite_ctx: AppContext) -> None:
    chat, student = _bound(sqlite_ctx)
    _request(chat)
    text = open_body(sqlite_ctx.box, chat.outbox("activation")[0]).text
    # Polish without the name (it would need the vocative); English with it.
    assert "Dzień dobry,\n" in text and f"Dzień dobry, {student.first_name}" not in text
    assert f"Hello {student.first_name}," in text


# --- not a code, not a command -------------------------------------------------------------------

def test_text_that_is_no_code_is_not_a_guess(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("en")
    chat.say(pesel)
    chat.say(student.album)
    for typed in ["abc", "12345", "1234567", "no idea"] * 3:  # twelve: over the five-guess limit
        chat.say(typed)
        assert "6 digits" in chat.text and "not right" not in chat.text, typed
    chat.say(" ".join(chat.binding_code()))  # "1 2 3 4 5 6" is the code, typed with spaces
    assert "Too many" not in chat.text
    assert chat.service.state_of(chat.channel, chat.account).student_id == student.id


def test_a_question_at_the_code_step_is_answered_and_the_code_asked_again(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("en")
    chat.say(pesel)
    chat.say(student.album)
    chat.say("The activation email did not arrive, I checked spam")
    assert "6 digits" in chat.text and len(chat.replies) >= 2


@pytest.mark.parametrize("language,phrase", [("en", "I do not know that command"), ("pl", "Nie znam")])
def test_unknown_command_before_binding_is_said(sqlite_ctx: AppContext, language: str, phrase: str) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.start_in(language)
    chat.say("/foo")
    assert phrase in chat.text and "PESEL" in chat.text


# --- a yes button confirms only what it was put under ---------------------------------------------

def test_an_old_confirm_under_the_application_does_not_revoke(sqlite_ctx: AppContext) -> None:
    chat, student = _bound(sqlite_ctx, "en")
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
    chat, _ = _bound(sqlite_ctx, "pl")
    chat.press("menu:request")
    chat.press_anyway("confirm:yes")  # the data every yes button had before
    assert "confirm:yes:request" in chat.buttons


# --- a PESEL typed into a help-desk question -------------------------------------------------------

def test_a_pesel_in_a_support_question_is_masked_everywhere(sqlite_ctx: AppContext) -> None:
    from core.models import Conversation, SupportMessage, SupportThread
    from tests.factories import student_pesel

    chat, _ = _bound(sqlite_ctx, "en")
    typed = student_pesel(901)
    chat.say("/support")
    chat.say(f"My PESEL is {typed}, the code K7MN-P2QR-TXWZ does not work, help")
    assert "ticket no. 1" in chat.text
    with Session(sqlite_ctx.engine) as session:
        stored = [t.subject for t in session.exec(select(SupportThread)).all()]
        stored += [m.body for m in session.exec(select(SupportMessage)).all()]
        stored += [c.state for c in session.exec(select(Conversation)).all()]
    assert stored and not any(typed in text or "K7MN-P2QR-TXWZ" in text for text in stored)
    assert any(f"{typed[:2]}*******{typed[-2:]}" in text for text in stored)
