"""What a support e-mail's answer looks like: one greeting, forwards to a person, HTML without its CSS."""

from __future__ import annotations

from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.credentials import service
from core.messaging.outbox import open_body
from core.storage.db import unit_of_work
from core.storage.models import InboundMail, OutboxMessage, Student
from core.support.faq import Faq
from core.support.mail_text import addressed
from core.support.mailbox_rules import InboundFacts, Outcome, handle_inbound
from mail.parse import parse_inbound
from tests.factories import add_student


def _handle(ctx: AppContext, facts: InboundFacts) -> Outcome:
    with unit_of_work(ctx.engine) as session:
        stored = InboundMail(mailbox="INBOX", uidvalidity=1, uid=1, message_id=facts.message_id,
                             digest=f"q-{facts.message_id}", size=100, received_at=ctx.clock.now())
        session.add(stored)
        session.flush()
        return handle_inbound(ctx, session, facts, inbound_id=stored.id or 0,
                              faq=Faq.load(ctx.settings.config_dir / "faq"))


def _last_answer(ctx: AppContext) -> str:
    with Session(ctx.engine) as session:
        row = session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id).desc())).first()
    assert row is not None
    return open_body(ctx.box, row).text


def _student(ctx: AppContext) -> Student:
    with unit_of_work(ctx.engine) as session:
        student, _ = add_student(session, ctx.box, first_name="Jan")
        service.request_credential(ctx, session, student, channel="console", actor="student")
        session.expunge(student)
        return student


def test_status_mail_greets_once(sqlite_ctx: AppContext) -> None:
    student = _student(sqlite_ctx)
    outcome = _handle(sqlite_ctx, InboundFacts(
        sender=student.email, subject="Status wniosku", text="Jaki jest status wniosku? Czy mam już legitymację?",
        message_id="<status-pl@example.org>"))
    assert outcome.reason == "answered from the FAQ (status)"
    text = _last_answer(sqlite_ctx)
    # No name in Polish: "Jan" would need the vocative ("Janie"), which a register name does not give.
    assert text.startswith("Dzień dobry,\n\nDane aktywacyjne zostały wysłane") and "Cześć" not in text
    assert "Jan," not in text


def test_status_mail_in_english_greets_once(sqlite_ctx: AppContext) -> None:
    student = _student(sqlite_ctx)
    outcome = _handle(sqlite_ctx, InboundFacts(
        sender=student.email, subject="Application status",
        text="Hello, what is the status of my application for the mobile student ID?\n\nSent from my iPhone",
        message_id="<status-en@example.org>"))
    assert outcome.reason == "answered from the FAQ (status)"
    text = _last_answer(sqlite_ctx)
    assert text.startswith("Hello,\n\nJan, the activation data has been sent") and "Hi, Jan" not in text


def test_forwarded_question_goes_to_a_person(sqlite_ctx: AppContext) -> None:
    outcome = _handle(sqlite_ctx, InboundFacts(
        sender="dziekanat@example.org", subject="Fwd: Nie dostałem maila z kodem",
        text="Proszę o pomoc.\n\n---------- Forwarded message ---------\nFrom: Jan <jan@example.org>\n"
             "Dzień dobry, nie dostałem maila z kodem aktywacyjnym.\n",
        message_id="<fwd@example.org>"))
    assert outcome.reason == "escalated to staff"


def test_signature_does_not_make_an_english_question_polish(sqlite_ctx: AppContext) -> None:
    outcome = _handle(sqlite_ctx, InboundFacts(
        sender="pawel@example.org", subject="Renewal",
        text="How do I renew my student ID?\n\nPaweł Łęcki\nPolitechnika Łódzka", message_id="<sig@example.org>"))
    assert outcome.reason == "answered from the FAQ (renewal)"
    assert _last_answer(sqlite_ctx).startswith("Hello,\n\n")


def test_html_only_mail_keeps_no_css_or_script() -> None:
    raw = (
        "From: Jan <jan@example.org>\r\nTo: help@example.edu.pl\r\nSubject: Kod\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n"
        "<html><head><meta charset=utf-8><title>t</title><style>p.MsoNormal{font-family:Calibri;}\r\n"
        ".x{color:red}</style></head><body><!--[if gte mso 9]><xml>o:OfficeDocumentSettings</xml><![endif]-->"
        "<p class=MsoNormal>Dzień dobry,</p><div>kod aktywacyjny mi wygasł.</div>"
        "<script type=\"text/javascript\">var a = 1;</script><STYLE>.y{}</STYLE></body></html>\r\n"
    ).encode()
    text = parse_inbound(raw).text
    assert text == "Dzień dobry,\nkod aktywacyjny mi wygasł."


def test_addressed_keeps_capitals_that_matter() -> None:
    assert addressed("Ewa", "Nie masz jeszcze mLegitymacji.") == "Ewa, nie masz jeszcze mLegitymacji."
    assert addressed("Ewa", "I sent the activation data.") == "Ewa, I sent the activation data."
    assert addressed("Ewa", "PESEL is missing.") == "Ewa, PESEL is missing."
    assert addressed("Ewa", "Your application is being processed.") == "Ewa, your application is being processed."
    # The polite capital of Polish "Twój/Twoja/Twoje" is not the sentence's: it stays.
    assert addressed("Ewa", "Twoja mLegitymacja jest aktywna.") == "Ewa, Twoja mLegitymacja jest aktywna."
    assert addressed("Ewa", "Twój wniosek został przyjęty.") == "Ewa, Twój wniosek został przyjęty."
    assert addressed("Ewa", "Twoje dane są w drodze.") == "Ewa, Twoje dane są w drodze."
    assert addressed("", "Nie masz jeszcze mLegitymacji.") == "Nie masz jeszcze mLegitymacji."


def test_oversize_notice_writes_the_size_as_each_language_does(sqlite_ctx: AppContext) -> None:
    size = 5 * 1024 * 1024 // 2  # 2.5 MB
    outcome = _handle(sqlite_ctx, InboundFacts(
        sender="ola@example.org", subject="Zrzut ekranu", text="Dzień dobry, w załączniku zrzut ekranu z błędem.",
        message_id="<big-pl@example.org>", size=size, oversize=True))
    assert outcome.reason == "over the size limit: notice sent, escalated"
    polish = _last_answer(sqlite_ctx)
    assert "(2,5 MB)" in polish and "biura obsługi" in polish and "Biuro obsługi mLegitymacji" in polish
    _handle(sqlite_ctx, InboundFacts(
        sender="ola@example.org", subject="Screenshot", text="Hello, the screenshot of the error is attached.",
        message_id="<big-en@example.org>", size=size, oversize=True))
    assert "(2.5 MB)" in _last_answer(sqlite_ctx)
