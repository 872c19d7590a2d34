"""`/forget` leaves nothing that links the chat account to the student, and every kind of personal
data has a retention rule that the retention job enforces and `mleg status` shows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, SQLModel, col, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.jobs import retention
from core.messaging import outbox, sending
from core.messaging.outgoing import OutgoingMessage
from core.security.forget import REMOVED_TEXT
from core.storage import audit
from core.storage.db import make_engine, unit_of_work
from core.storage.models import (
    Application,
    AuditEvent,
    BindingCode,
    ChatLink,
    Credential,
    CredentialEvent,
    OutboxMessage,
    OutboxStatus,
    ReminderLog,
    Student,
    SupportMessage,
    SupportThread,
    TermsAcceptance,
)
from core.support.answers import staff_reply
from tests.chat_driver import ChatDriver
from tests.cli_helpers import cli_environment, run
from tests.factories import add_student, build_ctx, make_settings
from tests.support.chat import bound_chat, chat_links

ACCOUNT = "4242424242"
QUESTION = "Czy mogę mieć legitymację na dwóch telefonach naraz, pyta Zuzanna Kwiatkowska?"


def _student(ctx: AppContext) -> tuple[Student, str]:
    with unit_of_work(ctx.engine) as session:
        student, pesel = add_student(session, ctx.box)
        session.expunge(student)
        return student, pesel


def _rows_holding(ctx: AppContext, needle: str) -> list[tuple[str, dict[str, Any]]]:
    """Every row of every table with `needle` in a text column."""
    found = []
    with ctx.engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            for row in connection.execute(sa.select(table)).mappings():
                if any(isinstance(value, str) and needle in value for value in row.values()):
                    found.append((table.name, dict(row)))
    return found


def _sent(ctx: AppContext) -> None:
    """The chat's rows delivered, as the sender would record them."""
    with unit_of_work(ctx.engine) as session:
        for row in session.exec(select(OutboxMessage).where(OutboxMessage.channel == "console")).all():
            sending.mark_sent(row, ctx.clock.now())
            row.last_error = f"earlier attempt: chat {ACCOUNT} timed out"
            session.add(row)


def test_forget_unlinks_the_account_everywhere_and_keeps_a_pseudonymous_audit(ctx: AppContext) -> None:
    student, pesel = _student(ctx)
    chat = ChatDriver(ctx, account=ACCOUNT)
    chat.start_in("pl")
    chat.say(pesel)
    chat.say("000000")  # a wrong try: its audit row names the account
    chat.say(pesel)
    chat.say(student.album)
    chat.say(chat.binding_code())
    chat.say(QUESTION)
    chat.press("confirm:yes:support")
    with unit_of_work(ctx.engine) as session:
        thread = session.exec(select(SupportThread)).one()
        staff_reply(ctx, session, thread.id or 0, text="Nie, Zuzanno, jedna na telefon.", staff="anna")
    _sent(ctx)
    assert _rows_holding(ctx, ACCOUNT)  # before: link, terms, audit, thread, outbox

    chat.say("/forget")
    chat.press("forget:yes")

    # Nothing keeps the chat account, except the wrong-guess counts (kept so /forget resets no lock;
    # they go with the guess window).
    left = [(table, row) for table, row in _rows_holding(ctx, ACCOUNT) if table != "guess_attempt"]
    assert left == []
    assert _rows_holding(ctx, "Zuzann") == []  # the ticket's texts, the student's and staff's
    with Session(ctx.engine) as session:
        assert session.exec(select(ChatLink)).all() == []
        [bound] = session.exec(select(AuditEvent).where(AuditEvent.action == "chat.bound")).all()
        [forgotten] = session.exec(select(AuditEvent).where(AuditEvent.action == "chat.forgotten")).all()
        # The audit still says a chat was bound to this student and later forgotten, under a pseudonym.
        assert bound.student_id == student.id and bound.actor.startswith("console:forgotten-")
        assert forgotten.actor == bound.actor
        acceptances = session.exec(select(TermsAcceptance)).all()
        assert acceptances and {a.account_id for a in acceptances} == {bound.actor.removeprefix("console:")}
        thread = session.exec(select(SupportThread)).one()
        assert thread.status == "closed" and thread.subject == "" and thread.student_id == student.id
        bodies = set(session.exec(select(SupportMessage.body)).all())
        assert bodies == {REMOVED_TEXT}
        answer = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "support-answer")).one()
        assert answer.body is None and answer.last_error is None
    # The account can start afresh (terms again, since nothing of it is known).
    chat.say("/start")
    assert "lang:pl" in chat.buttons


NOW = datetime(2027, 10, 5, 9, 0, tzinfo=UTC)


def _outbox_row(session: Session, ctx: AppContext, key: str, status: str, created: datetime) -> None:
    row = outbox.enqueue(session, ctx.box, key=key, channel="email", recipient=f"{key}@student.example.edu.pl",
                         kind="notice", message=OutgoingMessage(text="x", subject="y"), now=created)
    row.status = status
    row.sent_at = created if status == OutboxStatus.SENT else None
    row.last_error = "550 no such user" if status == OutboxStatus.FAILED else None
    session.add(row)


def test_retention_deletes_outbox_audit_and_acceptances_by_their_own_rules(tmp_path: Path, sqlite_url: str,
                                                                           clock: FixedClock) -> None:
    settings = make_settings(tmp_path, database_url=sqlite_url,
                             retention={"outbox_days": 10, "audit_days": 100, "terms_acceptance_days": 50})
    ctx = build_ctx(settings, make_engine(sqlite_url), clock)
    clock.set(NOW)
    with unit_of_work(ctx.engine) as session:
        student, _ = add_student(session, ctx.box)
        for key, status, age in (("old-sent", OutboxStatus.SENT, 11), ("old-failed", OutboxStatus.FAILED, 11),
                                 ("old-cancelled", OutboxStatus.CANCELLED, 11),
                                 ("old-pending", OutboxStatus.PENDING, 11), ("new-sent", OutboxStatus.SENT, 9)):
            _outbox_row(session, ctx, key, status, NOW - timedelta(days=age))
        audit.record(session, at=NOW - timedelta(days=101), actor="telegram:1", action="chat.bound",
                     student_id=student.id)
        audit.record(session, at=NOW - timedelta(days=99), actor="telegram:2", action="chat.bound",
                     student_id=student.id)
        session.add(ChatLink(channel="telegram", account_id="2", student_id=student.id or 0, bound_at=NOW))
        for account, age in (("1", 51), ("2", 51), ("3", 49)):
            session.add(TermsAcceptance(channel="telegram", account_id=account, student_id=student.id,
                                        version="2025-10-01", accepted_at=NOW - timedelta(days=age)))

    result = retention(ctx)

    assert (result["outbox"], result["audit_events"], result["terms_acceptances"]) == (3, 1, 1)
    with Session(ctx.engine) as session:
        keys = set(session.exec(select(OutboxMessage.idempotency_key)).all())
        assert keys == {"old-pending", "new-sent"}  # a pending row is work still to do
        assert session.exec(select(AuditEvent.actor).where(AuditEvent.action == "chat.bound")).all() == [
            "telegram:2"]
        # Account 2 is still linked: its acceptance stays whatever its age.
        kept = session.exec(select(TermsAcceptance.account_id).order_by(col(TermsAcceptance.account_id))).all()
        assert list(kept) == ["2", "3"]
    ctx.engine.dispose()


@pytest.mark.process
def test_status_shows_every_retention_rule(tmp_path: Path, sqlite_url: str) -> None:
    env = cli_environment(tmp_path, sqlite_url, MLEG_RETENTION__OUTBOX_DAYS="12", MLEG_JOBS__RETENTION_DAYS="200")
    result = run(["status"], env)
    assert result.returncode == 0, result.stderr
    rules = [line for line in result.stdout.splitlines() if line.startswith("retention")]
    text = "\n".join(rules)
    for what in ("support threads: 200 days", "chat conversations: 200 days", "e-mails of no thread: 200 days",
                 "outbox: sent, failed and cancelled rows 12 days", "audit trail: 1825 days",
                 "terms acceptances: 1825 days",
                 "ended credentials: 1825 days", "former students: 1825 days", "failed guesses:", "chat codes:"):
        assert what in text, text


def _credential(session: Session, student: Student, state: str, ended: datetime | None) -> int:
    credential = Credential(student_id=student.id or 0, state=state, policy="standalone",
                            valid_until=date(2023, 3, 31), created_at=NOW - timedelta(days=2000),
                            updated_at=ended or NOW, ended_at=ended)
    session.add(credential)
    session.flush()
    session.add(CredentialEvent(credential_id=credential.id or 0, from_state=None, to_state=state, actor="x",
                                reason="x", at=ended or NOW))
    session.add(ReminderLog(credential_id=credential.id or 0, kind="validity-14", created_at=NOW))
    session.add(Application(student_id=student.id or 0, kind="new", channel="telegram",
                            credential_id=credential.id, created_at=NOW - timedelta(days=2000)))
    return credential.id or 0


def test_former_students_and_ended_credentials_go_after_their_periods(tmp_path: Path, sqlite_url: str,
                                                                       clock: FixedClock) -> None:
    settings = make_settings(tmp_path, database_url=sqlite_url,
                             retention={"former_students_days": 400, "ended_credentials_days": 300})
    ctx = build_ctx(settings, make_engine(sqlite_url), clock)
    clock.set(NOW)
    long_ago, lately = NOW - timedelta(days=401), NOW - timedelta(days=100)
    with unit_of_work(ctx.engine) as session:
        gone, _ = add_student(session, ctx.box, status="graduated", updated_at=long_ago)
        removed_lately, _ = add_student(session, ctx.box, status="removed", removed_on=lately.date(),
                                        updated_at=long_ago)
        still_live, _ = add_student(session, ctx.box, status="graduated", updated_at=long_ago)
        active, _ = add_student(session, ctx.box)
        _credential(session, gone, "expired", long_ago)
        session.add(ChatLink(channel="telegram", account_id="9", student_id=gone.id or 0, bound_at=long_ago))
        session.add(TermsAcceptance(channel="telegram", account_id="9", student_id=gone.id, version="v",
                                    accepted_at=long_ago))
        thread = SupportThread(student_id=gone.id, channel="telegram", account_id="9", created_at=NOW,
                               updated_at=NOW)
        session.add(thread)
        _credential(session, still_live, "active", None)
        old_ended = _credential(session, active, "revoked", NOW - timedelta(days=301))
        kept_ended = _credential(session, active, "revoked", NOW - timedelta(days=299))
        ids = {name: s.id for name, s in (("gone", gone), ("removed_lately", removed_lately),
                                           ("still_live", still_live), ("active", active))}

    result = retention(ctx)

    assert (result["students"], result["credentials"]) == (1, 2)
    with Session(ctx.engine) as session:
        assert set(session.exec(select(Student.id)).all()) == {ids["removed_lately"], ids["still_live"],
                                                              ids["active"]}
        left = set(session.exec(select(Credential.id).where(Credential.student_id == ids["active"])).all())
        assert old_ended not in left and kept_ended in left
        for model in (CredentialEvent, ReminderLog, Application):
            assert {row.credential_id for row in session.exec(select(model)).all()} <= \
                set(session.exec(select(Credential.id)).all())
        assert session.exec(select(ChatLink)).all() == [] and session.exec(select(TermsAcceptance)).all() == []
        assert session.exec(select(SupportThread)).one().student_id is None  # the ticket goes by its own rule
    ctx.engine.dispose()


# --- /forget ---------------------------------------------------------------------------

@pytest.mark.parametrize("bound", [True, False])
def test_forget_is_confirmed_in_the_language_the_student_used(sqlite_ctx: AppContext, bound: bool) -> None:
    if bound:
        chat, _ = bound_chat(sqlite_ctx, "en")
    else:
        chat = ChatDriver(sqlite_ctx)
        chat.start_in("en")
    chat.say("/forget")
    chat.press("forget:yes")
    assert "Done: the conversation data has been deleted" in chat.text
    assert "Gotowe" not in chat.text


def test_gone_student_is_told_in_their_language(sqlite_ctx: AppContext) -> None:
    chat, student = bound_chat(sqlite_ctx, "en")
    with unit_of_work(sqlite_ctx.engine) as session:
        for model in (ChatLink, TermsAcceptance, BindingCode):
            session.execute(sa.delete(model).where(model.student_id == student.id))  # type: ignore[arg-type]
        session.delete(session.get(Student, student.id))
    chat.say("/status")
    assert "You're no longer in the student register" in chat.text


@pytest.mark.parametrize("word", ["tak", "yes", "t", "y", "ok", "Tak!"])
def test_typed_yes_confirms_forget(sqlite_ctx: AppContext, word: str) -> None:
    chat, _ = bound_chat(sqlite_ctx)
    chat.say("/forget")
    chat.say(word)
    assert "dane rozmowy zostały usunięte" in chat.text
    assert chat_links(sqlite_ctx) == []


@pytest.mark.parametrize("word", ["nie", "no"])
def test_typed_no_cancels_forget_and_shows_the_menu(sqlite_ctx: AppContext, word: str) -> None:
    chat, _ = bound_chat(sqlite_ctx)
    chat.say("/forget")
    chat.say(word)
    assert "Anulowano" in chat.text and "menu:status" in chat.buttons
    assert len(chat_links(sqlite_ctx)) == 1


def test_other_text_at_forget_asks_again_instead_of_cancelling(sqlite_ctx: AppContext) -> None:
    chat, _ = bound_chat(sqlite_ctx, "en")
    chat.say("/forget")
    chat.say("hmm, what does that mean?")
    assert "Choose \"Yes, delete\"" in chat.text and "forget:yes" in chat.buttons
    assert "Cancelled" not in chat.text
    assert chat.service.state_of("console", chat.account).step == "confirm_forget"
    chat.say("yes")
    assert "Done: the conversation data has been deleted" in chat.text and chat_links(sqlite_ctx) == []


def test_typed_yes_confirms_forget_before_the_terms_are_accepted(sqlite_ctx: AppContext) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.say("/start")
    chat.press("lang:pl")
    chat.say("/forget")
    chat.say("tak")
    assert "dane rozmowy zostały usunięte" in chat.text and "Regulamin usługi zmienił się" not in chat.text
