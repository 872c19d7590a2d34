"""The status answer by e-mail tells what the chat tells: the removal deadline; dead activation data is dead."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, col, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.credentials import service
from core.messaging.outbox import open_body
from core.storage.db import unit_of_work
from core.storage.models import Credential, CredentialState, InboundMail, OutboxMessage, Student
from core.students.semester import removal_deadline
from core.support.faq import Faq
from core.support.mailbox_rules import InboundFacts, handle_inbound
from tests.factories import add_student

QUESTION = ("Status wniosku", "Jaki jest status wniosku? Czy mam już legitymację?")


def _ask_by_mail(ctx: AppContext, student: Student) -> str:
    """The student asks for the status from the register address; the answer's text."""
    facts = InboundFacts(sender=student.email, subject=QUESTION[0], text=QUESTION[1],
                         message_id=f"<status-{ctx.clock.now().timestamp()}@example.org>")
    with unit_of_work(ctx.engine) as session:
        stored = InboundMail(mailbox="INBOX", uidvalidity=1, uid=1, message_id=facts.message_id,
                             digest=f"status-{ctx.clock.now().timestamp()}", size=100, received_at=ctx.clock.now())
        session.add(stored)
        session.flush()
        handle_inbound(ctx, session, facts, inbound_id=stored.id or 0, faq=Faq.load(ctx.settings.config_dir / "faq"))
    with Session(ctx.engine) as session:
        row = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "mail-answer")
                           .order_by(col(OutboxMessage.id).desc())).first()
    assert row is not None and row.recipient == student.email
    return open_body(ctx.box, row).text


def _requested(ctx: AppContext) -> tuple[Student, int]:
    with unit_of_work(ctx.engine) as session:
        student, _ = add_student(session, ctx.box)
        credential = service.request_credential(ctx, session, student, channel="console", actor="student")
        session.expunge(student)
        return student, credential.id or 0


def test_status_mail_of_a_removed_student_gives_the_removal_deadline(sqlite_ctx: AppContext) -> None:
    student, credential_id = _requested(sqlite_ctx)
    with unit_of_work(sqlite_ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        credential.state = CredentialState.ACTIVE  # activated in mObywatel
        stored = session.get(Student, student.id)
        assert stored is not None
        removed_on = sqlite_ctx.clock.today() - timedelta(days=20)
        stored.status, stored.removed_on = "removed", removed_on
        valid_until = credential.valid_until
    text = _ask_by_mail(sqlite_ctx, student)
    deadline = removal_deadline(removed_on)
    assert deadline < valid_until
    assert deadline.strftime("%d.%m.%Y") in text and valid_until.strftime("%d.%m.%Y") not in text


def test_status_mail_after_the_activation_deadline_says_expired(sqlite_ctx: AppContext) -> None:
    student, credential_id = _requested(sqlite_ctx)
    clock = sqlite_ctx.clock
    assert isinstance(clock, FixedClock)
    clock.advance(timedelta(days=31))
    text = _ask_by_mail(sqlite_ctx, student)
    with Session(sqlite_ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None and credential.state == CredentialState.EXPIRED
    assert "wygasły nieużyte" in text and "Aktywuj" not in text


QUESTION_EN = ("Application status",
               "Hello, what is the status of my application for the mobile student ID?")


def _ask_in_english(ctx: AppContext, student: Student) -> str:
    facts = InboundFacts(sender=student.email, subject=QUESTION_EN[0], text=QUESTION_EN[1],
                         message_id=f"<status-en-{ctx.clock.now().timestamp()}@example.org>")
    with unit_of_work(ctx.engine) as session:
        stored = InboundMail(mailbox="INBOX", uidvalidity=1, uid=1, message_id=facts.message_id,
                             digest=f"status-en-{ctx.clock.now().timestamp()}", size=100,
                             received_at=ctx.clock.now())
        session.add(stored)
        session.flush()
        handle_inbound(ctx, session, facts, inbound_id=stored.id or 0, faq=Faq.load(ctx.settings.config_dir / "faq"))
    with Session(ctx.engine) as session:
        row = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "mail-answer")
                           .order_by(col(OutboxMessage.id).desc())).first()
    assert row is not None and row.recipient == student.email
    return open_body(ctx.box, row).text


def _ended(ctx: AppContext, *, status: str, reason: str | None) -> Student:
    """A student whose register status is `status`; the credential revoked for `reason`, or expired (None)."""
    student, credential_id = _requested(ctx)
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        stored = session.get(Student, student.id)
        assert credential is not None and stored is not None
        if reason is None:
            assert isinstance(ctx.clock, FixedClock)
            ctx.clock.advance(timedelta(days=31))  # the activation data dies unused
        else:
            service.revoke(ctx, session, credential, reason=reason, actor="staff:test")
        stored.status = status
        if status == "removed":
            stored.removed_on = ctx.clock.today() - timedelta(days=40)
    return student


@pytest.mark.parametrize(("status", "reason", "says"), [
    ("graduated", "graduation", "ukończenie studiów"),
    ("removed", "removal", "skreślenie z listy studentów"),
    ("removed", "removal_grace_ended", "minął miesiąc od skreślenia"),
])
def test_status_mail_after_studies_ended_points_to_the_deans_office(
    sqlite_ctx: AppContext, status: str, reason: str, says: str,
) -> None:
    """The chat's rule: a graduate or a removed student is not told to apply again."""
    student = _ended(sqlite_ctx, status=status, reason=reason)
    text = _ask_by_mail(sqlite_ctx, student)
    assert says in text and "dziekanatem" in text, text
    assert "Możesz złożyć nowy wniosek" not in text
    english = _ask_in_english(sqlite_ctx, student)
    assert "dean's office" in english and "You can apply again" not in english, english


@pytest.mark.parametrize(("status", "why_pl", "why_en"), [
    ("graduated", "studia zostały ukończone", "you have graduated"),
    ("removed", "skreślono Cię z listy studentów", "you have been removed from the student list"),
])
def test_status_mail_of_an_expired_credential_of_a_student_no_longer_eligible(
    sqlite_ctx: AppContext, status: str, why_pl: str, why_en: str,
) -> None:
    """Expired (not revoked), then the studies ended: no "apply again", and the reason why not."""
    student = _ended(sqlite_ctx, status=status, reason=None)
    text = _ask_by_mail(sqlite_ctx, student)
    assert "wygasły nieużyte" in text and why_pl in text, text
    assert "Możesz złożyć nowy wniosek" not in text and "Złóż wniosek ponownie" not in text
    english = _ask_in_english(sqlite_ctx, student)
    assert "expired unused" in english and why_en in english, english
    assert "You can apply again" not in english and "Apply again" not in english


def test_status_mail_of_an_expired_credential_still_invites_an_eligible_student(sqlite_ctx: AppContext) -> None:
    student = _ended(sqlite_ctx, status="active", reason=None)
    assert "Złóż wniosek ponownie" in _ask_by_mail(sqlite_ctx, student)
    assert "Apply again" in _ask_in_english(sqlite_ctx, student)
