"""The student's whole journey through the engine, in both languages and under both policies."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.app.context import AppContext
from core.conversation import Event
from core.conversation.events import MESSAGE_TEXT_LIMIT, Reply, ReplyButton, coalesce_replies
from core.messaging.outbox import open_body
from core.storage.db import make_engine, unit_of_work
from core.storage.models import ChatLink, Credential, GuessAttempt, Student, SupportThread, TermsAcceptance
from core.support.answers import staff_reply
from tests.chat_driver import ChatDriver
from tests.factories import activation_code, add_student, build_ctx, make_settings


def _student(ctx: AppContext, **kw: object) -> tuple[Student, str]:
    with unit_of_work(ctx.engine) as session:
        return add_student(session, ctx.box, **kw)


def test_polish_journey_request_status_revoke_and_reissue(ctx: AppContext) -> None:
    student, pesel = _student(ctx)
    chat = ChatDriver(ctx)
    chat.say("/start")
    assert "lang:pl" in chat.buttons
    chat.press("lang:pl")
    assert "Regulamin usługi mLegitymacja (wersja 2025-10-01)" in chat.text
    chat.press("terms:accept")
    assert "PESEL" in chat.text
    chat.say(pesel)
    assert "numer albumu" in chat.text
    chat.say(student.album)
    assert "a***@student.example.edu.pl" in chat.text
    binding = chat.outbox("binding-code")
    assert [r.recipient for r in binding] == [student.email]
    chat.say(chat.binding_code())
    assert "tożsamość potwierdzona" in chat.text and "Nie masz jeszcze mLegitymacji" in chat.text
    chat.press("menu:request")
    assert "TYLKO na Twój adres uczelniany a***@" in chat.text and "Na aktywację masz 30 dni." in chat.text
    chat.press("confirm:yes:request")
    # 30 days from 5 Oct 11:00, Warsaw time (after the autumn DST change); valid for the winter semester.
    assert "Wniosek przyjęty" in chat.text and "do 04.11.2026 10:00; będzie ważna do 31.03.2027" in chat.text
    activation = chat.outbox("activation")
    assert len(activation) == 1 and activation[0].recipient == student.email
    chat.say("/status")
    assert "Aktywuj mLegitymację w mObywatelu do" in chat.text and "menu:revoke" in chat.buttons
    chat.press("menu:revoke")
    chat.press("revoke:lost_phone")
    assert "zgubiony lub skradziony telefon" in chat.text
    chat.press("confirm:yes:revoke")
    assert "unieważniona" in chat.text.lower() and "menu:request" in chat.buttons
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    assert len(chat.outbox("activation")) == 2
    with Session(ctx.engine) as session:
        states = sorted(c.state for c in session.exec(select(Credential)).all())
    assert states == ["pending_activation", "revoked"]


def test_english_journey_under_els_policy(tmp_path: Path, db_url: str, clock) -> None:  # type: ignore[no-untyped-def]
    ctx = build_ctx(make_settings(tmp_path, database_url=db_url, policy="els"), make_engine(db_url), clock)
    student, pesel = _student(ctx, els_number="ELS-2026-777", els_valid_until=date(2026, 10, 20))
    chat = ChatDriver(ctx)
    chat.start_in("en")
    chat.say(pesel)
    assert "ELS card" in chat.text
    chat.say(student.album)  # the album is not the ELS number under this policy
    assert "doesn't match" in chat.text
    chat.say(pesel)
    chat.say("els-2026-777")  # case and spacing forgiven
    chat.say(chat.binding_code())
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    assert "valid until 20.10.2026" in chat.text  # capped at the ELS card date
    ctx.engine.dispose()


def test_expired_els_card_refused_under_els_policy(tmp_path: Path, db_url: str, clock) -> None:  # type: ignore[no-untyped-def]
    ctx = build_ctx(make_settings(tmp_path, database_url=db_url, policy="els"), make_engine(db_url), clock)
    _, pesel = _student(ctx, els_number="ELS-1", els_valid_until=date(2026, 9, 30))
    chat = ChatDriver(ctx)
    chat.identify(pesel, "ELS-1", "en")
    assert "ELS card has expired" in chat.text
    assert "menu:request" not in chat.buttons
    chat.say("/request")
    assert "ELS card has expired" in chat.text
    ctx.engine.dispose()


@pytest.mark.parametrize(
    ("overrides", "phrase"),
    [
        ({"study_level": "doctoral"}, "doktoranci"),
        ({"study_level": "postgraduate"}, "podyplomowych"),
        ({"status": "removed", "removed_on": date(2026, 9, 20)}, "skreślono Cię z listy studentów"),
        ({"status": "graduated"}, "ukończone"),
        ({"status": "suspended"}, "zawieszone prawa studenta"),
    ],
)
def test_each_refusal_reason_is_explained(sqlite_ctx: AppContext, overrides: dict[str, object], phrase: str) -> None:
    student, pesel = _student(sqlite_ctx, **overrides)
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, student.album)
    assert phrase in chat.text
    chat.say("/request")
    assert phrase in chat.text
    assert chat.outbox("activation") == []


def test_student_without_pesel_cannot_be_identified_in_chat(sqlite_ctx: AppContext) -> None:
    from tests.factories import student_pesel

    student, _ = _student(sqlite_ctx, pesel="")
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("pl")
    chat.say(student_pesel(999))
    chat.say(student.album)
    assert "nie pasują do rejestru" in chat.text


def test_renewal_for_the_new_semester(sqlite_ctx: AppContext) -> None:
    from core.credentials import service as credentials

    student, pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, student.album)
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    with unit_of_work(sqlite_ctx.engine) as session:
        credential = session.exec(select(Credential)).one()
        text = open_body(sqlite_ctx.box, chat.outbox("activation")[0]).text
        code = activation_code(text)
        credentials.activate(sqlite_ctx, session, credential, code, actor="test")
    chat.say("/status")
    assert "aktywna i ważna do 31.03.2027" in chat.text
    assert "menu:renew" not in chat.buttons  # 5 October: the winter semester has just begun
    # 10 March: the summer semester has begun, 31 March is inside the 30-day window.
    sqlite_ctx.clock.set(datetime(2027, 3, 10, 9, 0, tzinfo=UTC))  # type: ignore[attr-defined]
    chat.say("/status")
    assert "aktywna i ważna do 31.03.2027" in chat.text
    assert "menu:renew" in chat.buttons
    chat.press("menu:renew")
    assert "31.10.2027" in chat.text
    chat.press("confirm:yes:renew")
    assert "Przedłużone" in chat.text and "31.10.2027" in chat.text
    chat.say("/renew")
    # The date, not "in the last 30 days".
    assert "za wcześnie" in chat.text and "przedłużysz ją od 01.10.2027" in chat.text


def test_declined_terms_allow_only_help(sqlite_ctx: AppContext) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.say("/start")
    chat.press("lang:pl")
    chat.press("terms:decline")
    assert "Bez akceptacji" in chat.text
    chat.say("12345678901")
    assert chat.text.strip() == sqlite_ctx.catalog.text("pl", "terms.declined_help")  # not taken as a PESEL
    chat.say("/status")
    assert chat.text.strip() == sqlite_ctx.catalog.text("pl", "terms.declined_help")
    chat.say("Zgubiłem telefon, co robić?")
    assert "Jedna mLegitymacja działa na jednym telefonie" in chat.text
    chat.press("terms:review")
    chat.press("terms:accept")
    assert "Podaj swój numer PESEL" in chat.text


def test_new_terms_version_is_asked_again_before_any_step(sqlite_ctx: AppContext) -> None:
    import dataclasses

    student, pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, student.album)
    terms = chat.service.config.terms
    new_terms = dataclasses.replace(terms, version="2026-12-01")
    chat.service.config = dataclasses.replace(chat.service.config, terms=new_terms)
    chat.say("/request")
    assert "Regulamin usługi zmienił się" in chat.text and "terms:accept" in chat.buttons
    chat.press("terms:accept")
    assert "Cześć" in chat.text  # straight back to the menu, still bound
    with Session(sqlite_ctx.engine) as session:
        versions = sorted(t.version for t in session.exec(select(TermsAcceptance)).all())
    assert versions == ["2025-10-01", "2026-12-01"]


def test_support_question_escalated_and_staff_answer_comes_back(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, student.album)
    chat.say("Czy mogę mieć dwie legitymacje na tablecie i zegarku jednocześnie?")
    assert "biura obsługi" in chat.text and "confirm:yes:support" in chat.buttons
    chat.press("confirm:yes:support")
    assert "zgłoszenie nr" in chat.text
    with unit_of_work(sqlite_ctx.engine) as session:
        thread = session.exec(select(SupportThread)).one()
        assert (thread.student_id, thread.status) == (student.id, "escalated")
        staff_reply(sqlite_ctx, session, thread.id or 0, text="Nie, jedna na telefon.", staff="anna")
    answer = chat.outbox("support-answer")[0]
    assert (answer.channel, answer.recipient) == ("console", chat.account)
    assert "Nie, jedna na telefon." in open_body(sqlite_ctx.box, answer).text


def test_support_command_takes_the_next_message(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, student.album)
    chat.say("/support")
    chat.say("x" * 10_000)
    assert "skrócona" in chat.text and "zgłoszenie nr" in chat.text


def test_faq_answer_offers_the_matching_action(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, student.album)
    chat.say("I lost my phone yesterday, what now?")
    # Heard as the lost phone itself (issue 15): with no credential there is nothing to revoke, so Apply.
    assert "Nie masz teraz mLegitymacji, którą trzeba unieważnić" in chat.text and "menu:request" in chat.buttons
    chat.say("wniosek")
    chat.press("confirm:yes:request")
    chat.say("I lost my phone yesterday, what now?")
    assert "Unieważnić mLegitymację z powodu zgubionego telefonu?" in chat.text and "confirm:yes:revoke" in chat.buttons


def test_activation_help_step_by_step(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, student.album, "en")
    chat.say("/help")
    chat.press("help:step")
    assert "Step 1/9" in chat.text
    for n in range(2, 10):
        chat.press("help:next")
        assert f"Step {n}/9" in chat.text
    chat.press("help:next")
    assert "That's all" in chat.text
    chat.press("menu:status")
    chat.press("menu:help")
    chat.press("help:all")
    assert "Profil Zaufany" in chat.text and "e-dowód" in chat.text  # either one logs in to mObywatel


def test_language_switch_mid_journey(sqlite_ctx: AppContext) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("pl")
    chat.say("/language")
    chat.press("lang:en")
    assert "Language: English" in chat.text and "PESEL number" in chat.text


def test_forget_unbinds_and_deletes_conversation_but_keeps_register_and_limits(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("pl")
    chat.say(pesel)
    chat.say("000000")  # one wrong try is on record
    chat.say(pesel)
    chat.say(student.album)
    chat.say(chat.binding_code())
    with Session(sqlite_ctx.engine) as session:
        limits_before = sorted((g.kind, g.scope, g.key) for g in session.exec(select(GuessAttempt)).all())
    assert ("identify", "account") in {(kind, scope) for kind, scope, _ in limits_before}
    chat.say("/forget")
    chat.press("forget:yes")
    assert "dane rozmowy zostały usunięte" in chat.text
    with Session(sqlite_ctx.engine) as session:
        assert session.exec(select(ChatLink)).all() == []
        assert session.get(Student, student.id) is not None
        # Every guess and mailed code stays on record: /forget must not reset a limit.
        assert sorted((g.kind, g.scope, g.key) for g in session.exec(select(GuessAttempt)).all()) == limits_before
    chat.say("hej")
    assert "lang:pl" in chat.buttons  # a fresh start


def test_state_survives_a_restart(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("pl")
    chat.say(pesel)
    restarted = ChatDriver(sqlite_ctx, account=chat.account)  # a new service: nothing in memory
    restarted.say(student.album)
    assert "Jednorazowy kod został wysłany" in restarted.text


def test_redelivered_event_changes_nothing(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, student.album)
    chat.press("menu:request")
    confirm = Event(kind="button", channel="console", account_id=chat.account, text="confirm:yes:request",
                    event_id="upd-1")
    chat.send(confirm)
    assert chat.service.handle(confirm) == []  # e.g. Telegram delivering the same update again
    assert len(chat.outbox("activation")) == 1


def test_binding_code_expires_after_15_minutes_and_can_be_resent(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("en")
    chat.say(pesel)
    chat.say(student.album)
    old = chat.binding_code()
    sqlite_ctx.clock.advance(minutes=15, seconds=1)  # type: ignore[attr-defined]
    chat.say(old)
    assert "expired" in chat.text
    chat.press("code:resend")
    new = chat.binding_code()
    chat.say(old)
    assert old != new and "isn't right" in chat.text  # the resent code replaced the old one
    chat.say(new)
    assert "you're identified" in chat.text
    chat.say(new)  # single use: now it is just text in the menu
    assert "I know who you are" not in chat.text


def test_replies_queued_in_outbox_when_asked(sqlite_ctx: AppContext) -> None:
    service = ChatDriver(sqlite_ctx).service
    replies = service.handle(Event.text_message("telegram", "42", "/start", event_id="tg:1"),
                             queue_channel="telegram")
    rows = ChatDriver(sqlite_ctx).outbox("chat-reply")
    # The greeting and the language question go as one message, with the question's buttons.
    assert len(replies) == 2 and len(rows) == 1 and rows[0].recipient == "42"
    message = open_body(sqlite_ctx.box, rows[0])
    assert message.text == f"{replies[0].text}\n\n{replies[1].text}"
    assert message.buttons[0][0].data == "lang:pl"
    service.handle(Event.text_message("telegram", "42", "/start", event_id="tg:1"), queue_channel="telegram")
    assert len(ChatDriver(sqlite_ctx).outbox("chat-reply")) == 1


def test_a_turns_replies_are_coalesced_only_where_nothing_is_lost() -> None:
    button = [[ReplyButton("OK", "ok")]]
    plain, asked, picture = Reply("Done."), Reply("Next?", buttons=button), Reply("QR", image_png=b"png")
    assert coalesce_replies([plain, asked]) == [Reply("Done.\n\nNext?", buttons=button)]
    # Buttons belong under the message that asks; an image is a message of its own.
    assert coalesce_replies([asked, plain]) == [asked, plain]
    assert coalesce_replies([plain, picture, plain]) == [plain, picture, plain]
    long = Reply("x" * (MESSAGE_TEXT_LIMIT - 5))
    assert coalesce_replies([long, plain]) == [long, plain]  # would not fit one message
    assert coalesce_replies([plain, plain, plain]) == [Reply("Done.\n\nDone.\n\nDone.")]
    assert coalesce_replies([]) == []


def test_activation_deadline_is_shown_in_warsaw_time(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    # 22:00 UTC = 1 Oct 00:00 in Warsaw: the winter semester there (valid until 31 March), while
    # the UTC date would still be 30 September, the summer semester (valid until 31 October).
    sqlite_ctx.clock.set(datetime(2026, 9, 30, 22, 0, tzinfo=UTC))  # type: ignore[attr-defined]
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, student.album)
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    # 30 days later is past the DST change: 22:00 UTC is 23:00 in Warsaw (UTC+1), not 00:00.
    assert "30.10.2026 23:00; będzie ważna do 31.03.2027" in chat.text
