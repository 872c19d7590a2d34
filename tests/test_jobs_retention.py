"""Retention: closed threads and idle conversations past the period go; the audit trail stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import Session, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.jobs import retention, run_due
from core.storage import audit
from core.storage.blobs import insert_blob
from core.storage.db import unit_of_work
from core.storage.models import (
    AuditEvent,
    BindingCode,
    Conversation,
    GuessAttempt,
    InboundMail,
    InboundMailRaw,
    OutboxMessage,
    SupportMessage,
    SupportThread,
)
from core.support import answers as staff_answers
from core.support import threads as support
from mail.stored import RAW
from tests.chat_driver import ChatDriver
from tests.factories import add_student
from tests.support.lifecycle import at

NOW = datetime(2027, 10, 5, 9, 0, tzinfo=UTC)


def _thread(session: Session, status: str, updated: datetime) -> int:
    thread = SupportThread(channel="email", account_id="a@example.edu.pl", status=status,
                           created_at=updated, updated_at=updated,
                           closed_at=updated if status == "closed" else None)
    session.add(thread)
    session.flush()
    session.add(SupportMessage(thread_id=thread.id or 0, direction="in", author="a", body="x", created_at=updated))
    audit.record(session, at=updated, actor="staff:x", action="thread.close", thread_id=thread.id)
    mail = InboundMail(mailbox="INBOX", uidvalidity=1, uid=thread.id or 0, digest=f"d{thread.id}", size=5,
                       status="processed", thread_id=thread.id, received_at=updated)
    session.add(mail)
    session.flush()
    insert_blob(session, RAW, mail.id or 0, b"mail\n")
    return thread.id or 0


def test_old_closed_threads_and_idle_conversations_are_deleted(ctx: AppContext) -> None:
    old, recent = NOW - timedelta(days=400), NOW - timedelta(days=10)
    with unit_of_work(ctx.engine) as session:
        gone = _thread(session, "closed", old)
        _thread(session, "open", old)  # never closed, and nobody touched it for the whole period
        kept_open = _thread(session, "escalated", recent)
        kept_recent = _thread(session, "closed", recent)
        session.add(Conversation(channel="telegram", account_id="1", created_at=old, updated_at=old))
        session.add(Conversation(channel="telegram", account_id="2", created_at=old, updated_at=recent))
        student, _ = add_student(session, ctx.box)
        session.add(GuessAttempt(kind="pesel", scope="account", key="k", at=NOW - timedelta(days=3)))
        session.add(GuessAttempt(kind="pesel", scope="account", key="k", at=NOW - timedelta(minutes=5)))
        for used, expires in ((None, NOW - timedelta(hours=1)), (NOW, NOW + timedelta(minutes=9)),
                              (None, NOW + timedelta(minutes=9))):
            session.add(BindingCode(channel="telegram", account_id="1", student_id=student.id or 0, code_hash="h",
                                    created_at=NOW, expires_at=expires, used_at=used))
    at(ctx, NOW.isoformat())
    assert retention(ctx) == {"threads": 2, "support_messages": 2, "inbound_mails": 2, "conversations": 1,
                              "guess_attempts": 1, "binding_codes": 2, "outbox": 0, "audit_events": 0,
                              "terms_acceptances": 0, "students": 0, "credentials": 0, "stored_updates": 0}
    with Session(ctx.engine) as session:
        assert {t.id for t in session.exec(select(SupportThread)).all()} == {kept_open, kept_recent}
        assert [c.account_id for c in session.exec(select(Conversation)).all()] == ["2"]
        assert len(session.exec(select(GuessAttempt)).all()) == 1
        assert len(session.exec(select(BindingCode)).all()) == 1
        trail = session.exec(select(AuditEvent.thread_id).where(AuditEvent.action == "thread.close")).all()
        assert gone in trail  # the audit trail outlives the thread
        # The raw mails go with their rows (ON DELETE CASCADE), the kept threads' stay.
        kept_mails = set(session.exec(select(InboundMail.id)).all())
        assert set(session.exec(select(InboundMailRaw.inbound_id)).all()) == kept_mails and len(kept_mails) == 2


def test_retention_runs_once_a_day(ctx: AppContext) -> None:
    at(ctx, NOW.isoformat())
    assert "skipped" not in run_due(ctx)["retention"]
    at(ctx, (NOW + timedelta(hours=23)).isoformat())
    assert "skipped" in run_due(ctx)["retention"]
    at(ctx, (NOW + timedelta(hours=24)).isoformat())
    assert "skipped" not in run_due(ctx)["retention"]


def test_a_code_after_retention_is_still_mailed(sqlite_ctx: AppContext) -> None:
    """Retention deletes used codes and SQLite reuses their ids; the next code must still be queued.

    The outbox key was `binding:{code id}`: the second student's code got id 1 again, the key
    was taken, and enqueue dropped it without a word while the bot said "code sent".
    """
    with unit_of_work(sqlite_ctx.engine) as session:
        (first, first_pesel), (second, second_pesel) = add_student(session, sqlite_ctx.box), \
            add_student(session, sqlite_ctx.box)
    one = ChatDriver(sqlite_ctx)
    one.identify(first_pesel, first.album)
    assert retention(sqlite_ctx)["binding_codes"] == 1

    two = ChatDriver(sqlite_ctx)
    two.start_in("pl")
    two.say(second_pesel)
    two.say(second.album)
    codes = two.outbox("binding-code")
    assert [row.recipient for row in codes] == [first.email, second.email]
    two.say(two.binding_code())
    assert "/status" in two.text or "mLegitymac" in two.text


def test_a_staff_answer_after_retention_reused_the_ids_is_still_queued(sqlite_ctx: AppContext) -> None:
    """A quiet mailbox: retention deletes the only thread, SQLite gives the next one the same ids;
    the new student's answer must still be queued (and under a Message-ID of its own)."""
    clock = sqlite_ctx.clock
    assert isinstance(clock, FixedClock)
    replies = []
    for _ in range(2):
        with unit_of_work(sqlite_ctx.engine) as session:
            thread = support.open_thread(sqlite_ctx, session, student_id=None, channel="email",
                                         account_id="ola@example.org", text="Pytanie?", language="pl",
                                         subject="Pytanie")
            replies.append((thread.id, staff_answers.staff_reply(sqlite_ctx, session, thread.id or 0, text="Odpowiedź",
                                                           staff="jan")))
            support.close_thread(sqlite_ctx, session, thread.id or 0, staff="jan")
        clock.advance(days=sqlite_ctx.settings.jobs.retention_days + 1)
        assert retention(sqlite_ctx)["threads"] == 1
    (first_thread, first), (second_thread, second) = replies
    assert first_thread == second_thread and first.id == second.id  # the ids did come back
    assert first.email_message_id != second.email_message_id
    with Session(sqlite_ctx.engine) as session:
        answers = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "support-answer")).all()
    assert len(answers) == 2


def test_mails_of_no_thread_go_after_the_period_quarantined_ones_with_their_raw_copy(ctx: AppContext) -> None:
    """Ignored auto-replies and quarantined mail belong to no thread: they must not be kept for ever
    (a quarantined mail keeps its raw copy for staff, and it may hold a PESEL in clear)."""
    old, recent = NOW - timedelta(days=400), NOW - timedelta(days=10)
    with unit_of_work(ctx.engine) as session:
        rows = {}
        for name, status, when in (("old_quarantined", "quarantined", old), ("old_ignored", "ignored", old),
                                   ("recent_quarantined", "quarantined", recent), ("old_new", "new", old)):
            mail = InboundMail(mailbox="INBOX", uidvalidity=1, uid=len(rows) + 1, digest=f"n{name}", size=5,
                               status=status, received_at=when, processed_at=None if status == "new" else when)
            session.add(mail)
            session.flush()
            insert_blob(session, RAW, mail.id or 0, b"PESEL in clear\n")
            rows[name] = mail.id
    at(ctx, NOW.isoformat())
    assert retention(ctx)["inbound_mails"] == 2
    with Session(ctx.engine) as session:
        kept = set(session.exec(select(InboundMail.id)).all())
        # A mail never processed is work still to do, whatever its age.
        assert kept == {rows["recent_quarantined"], rows["old_new"]}
        assert set(session.exec(select(InboundMailRaw.inbound_id)).all()) == kept
