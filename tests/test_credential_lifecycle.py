"""Credential lifecycle: request, activation window, activation, renewal, revocation (both databases)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.app.clock import WARSAW
from core.app.context import AppContext
from core.app.errors import ActivationError, ConflictError, EligibilityError, RateLimitedError, TransitionError
from core.credentials import renewal as renewal_service
from core.credentials import service
from core.credentials.lifecycle import transition
from core.storage.db import unit_of_work
from core.storage.models import Credential, CredentialEvent, CredentialState, OutboxMessage
from core.students.eligibility import Reason
from tests.factories import add_student, issue
from tests.support.lifecycle import mailed_activation_code


def test_request_issues_activation_data_to_register_address(ctx: AppContext) -> None:
    _, credential_id = issue(ctx)
    with Session(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        assert credential.state == CredentialState.PENDING_ACTIVATION
        # 5 October, the winter semester: valid until 31 March, so the data lives its full 30 days.
        assert credential.valid_until == date(2027, 3, 31)
        assert credential.activation_deadline == ctx.clock.now() + timedelta(days=30)
        row = session.exec(select(OutboxMessage).where(OutboxMessage.credential_id == credential_id)).one()
        assert row.recipient.endswith("@student.example.edu.pl")
        assert row.channel == "email"
        code = mailed_activation_code(ctx, credential_id)
        # Only the keyed hash of the code is stored; the clear code lives in the encrypted body.
        assert credential.code_hash == ctx.box.keyed_hash("activation-code", code.replace("-", ""))
        assert code.encode() not in (row.body or b"")
        events = session.exec(
            select(CredentialEvent).where(CredentialEvent.credential_id == credential_id)
            .order_by(col(CredentialEvent.id))
        ).all()
        assert [(e.from_state, e.to_state) for e in events] == [
            (None, "requested"), ("requested", "pending_activation")]


def test_one_live_credential_per_student(ctx: AppContext) -> None:
    student_id, _ = issue(ctx)
    with unit_of_work(ctx.engine) as session:
        from core.storage.models import Student

        student = session.get(Student, student_id)
        assert student is not None
        with pytest.raises(ConflictError):
            service.request_credential(ctx, session, student, channel="console", actor="student")


def test_database_refuses_second_live_credential(ctx: AppContext) -> None:
    student_id, _ = issue(ctx)
    with pytest.raises(IntegrityError), unit_of_work(ctx.engine) as session:
        session.add(Credential(student_id=student_id, state="active", policy="standalone",
                               valid_until=date(2027, 3, 31), created_at=ctx.clock.now(),
                               updated_at=ctx.clock.now()))


def test_ineligible_student_refused(ctx: AppContext) -> None:
    with pytest.raises(EligibilityError) as caught, unit_of_work(ctx.engine) as session:
        student, _ = add_student(session, ctx.box, study_level="doctoral")
        service.request_credential(ctx, session, student, channel="console", actor="student")
    assert caught.value.reasons == [Reason.DOCTORAL]


def _try(ctx: AppContext, credential_id: int, code: str) -> None:
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        service.activate(ctx, session, credential, code, actor="t")


def test_activation_code_is_single_use(ctx: AppContext) -> None:
    _, credential_id = issue(ctx)
    code = mailed_activation_code(ctx, credential_id)
    _try(ctx, credential_id, code.lower())  # typed in lower case still works
    with Session(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        assert credential.state == CredentialState.ACTIVE
        assert credential.code_hash is None
    with pytest.raises(ActivationError):
        _try(ctx, credential_id, code)


def test_activation_guesses_limited_per_student(ctx: AppContext) -> None:
    _, credential_id = issue(ctx)
    code = mailed_activation_code(ctx, credential_id)
    for _ in range(5):
        with pytest.raises(ActivationError, match="wrong"):
            _try(ctx, credential_id, "AAAA-AAAA-AAAA")
    with pytest.raises(RateLimitedError) as caught:
        _try(ctx, credential_id, code)  # even the right code waits for the lock to lift
    assert caught.value.until == ctx.clock.now() + timedelta(hours=1)
    ctx.clock.advance(hours=1, seconds=1)  # type: ignore[attr-defined]
    _try(ctx, credential_id, code)


def test_activation_window_of_30_days(ctx: AppContext) -> None:
    _, credential_id = issue(ctx)
    code = mailed_activation_code(ctx, credential_id)
    ctx.clock.advance(days=30, seconds=1)  # type: ignore[attr-defined]
    with pytest.raises(ActivationError, match="window"), unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        service.activate(ctx, session, credential, code, actor="t")


def _activate(ctx: AppContext, credential_id: int) -> None:
    code = mailed_activation_code(ctx, credential_id)
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        service.activate(ctx, session, credential, code, actor="t")


def test_renewal_window_and_new_semester(ctx: AppContext) -> None:
    from core.storage.models import Student

    student_id, credential_id = issue(ctx)
    _activate(ctx, credential_id)
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        credential = session.get(Credential, credential_id)
        assert student is not None and credential is not None
        # 5 October, valid until 31 March: not yet inside the 30-day renewal window.
        assert credential.valid_until == date(2027, 3, 31)
        check = renewal_service.renewal_check(ctx, student, credential)
        assert not check.possible and check.reason == "too_early"
    # 1 March, the summer semester has begun: 30 days before 31 March, the window opens.
    ctx.clock.set(datetime(2027, 3, 1, 9, 0, tzinfo=WARSAW))  # type: ignore[attr-defined]
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        credential = session.get(Credential, credential_id)
        assert student is not None and credential is not None
        check = renewal_service.renewal_check(ctx, student, credential)
        assert check.possible and check.new_valid_until == date(2027, 10, 31)
        renewal_service.renew(ctx, session, student, credential, channel="console", actor="student")
        assert credential.valid_until == date(2027, 10, 31)
        check = renewal_service.renewal_check(ctx, student, credential)
        assert not check.possible and check.reason == "too_early"


def test_renewal_before_the_next_semester_begins_reaches_its_end(ctx: AppContext) -> None:
    """A renewal window longer than a month opens still in the winter semester: renewing then gives
    the summer semester's date (31 October), not the winter one the credential already has."""
    from core.storage.models import Student

    ctx.settings.credential.renewal_window_days = 45
    student_id, credential_id = issue(ctx)
    _activate(ctx, credential_id)
    ctx.clock.set(datetime(2027, 2, 20, 10, 0, tzinfo=WARSAW))  # type: ignore[attr-defined]
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        credential = session.get(Credential, credential_id)
        assert student is not None and credential is not None
        assert credential.valid_until == date(2027, 3, 31)
        check = renewal_service.renewal_check(ctx, student, credential)
        assert check.possible and check.new_valid_until == date(2027, 10, 31)


def test_els_policy_new_application_needs_a_later_card(tmp_path, db_url, clock) -> None:  # type: ignore[no-untyped-def]
    """Under the ELS policy nothing is renewed (docs/domain.md: extending needs a new application); the
    new application that replaces the credential needs a card valid beyond it, and ends with the card."""
    from core.storage.db import make_engine
    from core.storage.models import Student
    from tests.factories import build_ctx, make_settings

    ctx = build_ctx(make_settings(tmp_path, database_url=db_url, policy="els"), make_engine(db_url), clock)
    student_id, credential_id = issue(ctx, els_valid_until=date(2026, 10, 31))
    _activate(ctx, credential_id)
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        credential = session.get(Credential, credential_id)
        assert student is not None and credential is not None
        assert credential.valid_until == date(2026, 10, 31)
        assert renewal_service.renewal_check(ctx, student, credential).reason == renewal_service.ELS_APPLY_AGAIN
        assert renewal_service.replacement_check(ctx, student, credential).reason == "els_not_extended"
        student.els_valid_until = date(2027, 2, 28)
        assert not renewal_service.renewal_check(ctx, student, credential).possible
        check = renewal_service.replacement_check(ctx, student, credential)
        assert check.possible and check.new_valid_until == date(2027, 2, 28)
    ctx.engine.dispose()


def test_revoke_records_who_why_when_and_notifies(ctx: AppContext) -> None:
    _, credential_id = issue(ctx)
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        service.revoke(ctx, session, credential, reason="lost_phone", actor="student")
    with Session(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        assert (credential.state, credential.end_reason) == ("revoked", "lost_phone")
        assert credential.code_hash is None
        event = session.exec(select(CredentialEvent).where(CredentialEvent.to_state == "revoked")).one()
        assert (event.actor, event.reason, event.at) == ("student", "lost_phone", ctx.clock.now())
        mails = session.exec(select(OutboxMessage.kind, OutboxMessage.status, OutboxMessage.body)
                             .order_by(col(OutboxMessage.id))).all()
    # The activation mail had not gone out yet (the mail server away): it never will, its data is
    # dead (kept as cancelled, body wiped). The notice of the revocation goes.
    assert [(kind, status, body is None) for kind, status, body in mails] == [
        ("activation", "cancelled", True), ("revoked", "pending", False)]


def test_revoke_leaves_a_sent_activation_mail_and_one_being_sent(ctx: AppContext) -> None:
    _, sent_id = issue(ctx)
    _, sending_id = issue(ctx)
    with unit_of_work(ctx.engine) as session:
        for credential_id, status in ((sent_id, "sent"), (sending_id, "sending")):
            row = session.exec(select(OutboxMessage).where(OutboxMessage.credential_id == credential_id)).one()
            row.status = status
            session.add(row)
    with unit_of_work(ctx.engine) as session:
        for credential_id in (sent_id, sending_id):
            credential = session.get(Credential, credential_id)
            assert credential is not None
            service.revoke(ctx, session, credential, reason="lost_phone", actor="student")
    with Session(ctx.engine) as session:
        statuses = session.exec(select(OutboxMessage.status).where(OutboxMessage.kind == "activation")
                                .order_by(col(OutboxMessage.id))).all()
    assert statuses == ["sent", "sending"]  # sent is sent; the one in flight finishes (its lease)


def test_terminal_states_do_not_move(ctx: AppContext) -> None:
    _, credential_id = issue(ctx)
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        service.revoke(ctx, session, credential, reason="staff", actor="staff:x")
        for target in CredentialState:
            with pytest.raises(TransitionError):
                transition(session, credential, target, actor="x", reason="y", now=ctx.clock.now())


def test_after_revocation_a_new_request_is_possible(ctx: AppContext) -> None:
    from core.storage.models import Student

    student_id, credential_id = issue(ctx)
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        student = session.get(Student, student_id)
        assert credential is not None and student is not None
        service.revoke(ctx, session, credential, reason="new_phone", actor="student")
        again = service.request_credential(ctx, session, student, channel="console", actor="student")
        assert again.id != credential_id
