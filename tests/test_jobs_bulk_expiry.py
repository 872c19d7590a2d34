"""The set-based validity expiry leaves exactly what `transition()` leaves, in batches, once."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.credentials.lifecycle import transition
from core.jobs.sweep import expire_validity
from core.messaging import outbox
from core.messaging.outgoing import OutgoingMessage
from core.storage.db import unit_of_work
from core.storage.models import AuditEvent, Credential, CredentialEvent, CredentialState, OutboxMessage
from tests.factories import add_student

NOW = datetime(2027, 4, 1, 6, 0, tzinfo=UTC)


def _credentials(ctx: AppContext, states: list[str]) -> list[int]:
    ids = []
    with unit_of_work(ctx.engine) as session:
        for state in states:
            student, _ = add_student(session, ctx.box)
            row = Credential(student_id=student.id or 0, state=state, policy="standalone",
                             valid_until=date(2027, 3, 31), code_hash="h", qr_token_hash="q",
                             created_at=NOW, updated_at=NOW)
            session.add(row)
            session.flush()
            ids.append(row.id or 0)
            # Still waiting when the validity ends (the mail server away): the reminder and the
            # activation data are pointless now, the other notice still goes, the sent one stays.
            for kind, sent in (("reminder", False), ("activation", False), ("renewed", False), ("activation", True)):
                queued = outbox.enqueue(session, ctx.box, key=f"{kind}:{row.id}:{sent}", channel="email",
                                        recipient="student@student.example.edu.pl", kind=kind,
                                        message=OutgoingMessage(subject="s", text=kind), now=NOW, credential_id=row.id)
                queued.status = "sent" if sent else "pending"
    return ids


def _trace(ctx: AppContext, cid: int) -> tuple[object, ...]:
    with Session(ctx.engine) as session:
        c = session.get(Credential, cid)
        assert c is not None
        events = session.exec(select(CredentialEvent).where(CredentialEvent.credential_id == cid)).all()
        audits = session.exec(select(AuditEvent).where(AuditEvent.credential_id == cid)).all()
        mails = session.exec(select(OutboxMessage).where(OutboxMessage.credential_id == cid)
                             .order_by(col(OutboxMessage.id))).all()
        return (
            (c.state, c.updated_at, c.ended_at, c.end_reason, c.code_hash, c.qr_token_hash),
            [(e.from_state, e.to_state, e.actor, e.reason, e.at) for e in events],
            [(a.at, a.actor, a.action, a.detail, a.thread_id, a.student_id == c.student_id) for a in audits],
            [(m.kind, m.status, m.body is None, m.last_error, m.next_attempt_at, m.lease_until) for m in mails],
        )


def test_bulk_path_equals_transition(ctx: AppContext) -> None:
    by_hand, bulk = _credentials(ctx, ["active", "active"])
    with unit_of_work(ctx.engine) as session:
        row = session.get(Credential, by_hand)
        assert row is not None
        transition(session, row, CredentialState.EXPIRED, actor="jobs", reason="validity_ended", now=NOW)
    assert expire_validity(ctx.engine, now=NOW, today=date(2027, 4, 1), batch_size=10) == 1
    credential_by_hand, events_by_hand, _, mails_by_hand = _trace(ctx, by_hand)
    credential_bulk, events_bulk, audits_bulk, mails_bulk = _trace(ctx, bulk)
    assert (credential_bulk, events_bulk, mails_bulk) == (credential_by_hand, events_by_hand, mails_by_hand)
    assert [(kind, status) for kind, status, *_ in mails_bulk] == [
        ("reminder", "cancelled"), ("activation", "cancelled"), ("renewed", "pending"), ("activation", "sent")]
    # The bulk path audits once per batch; the credential's own history is complete.
    assert audits_bulk == []
    with Session(ctx.engine) as session:
        batch = session.exec(select(AuditEvent).where(AuditEvent.action == "credential.expired.batch")).one()
    assert '"count": 1' in batch.detail and f'"first_credential_id": {bulk}' in batch.detail


def test_batches_cover_every_due_row_once_and_spare_the_rest(ctx: AppContext) -> None:
    due = _credentials(ctx, ["active"] * 7 + ["pending_activation"] * 3)
    spared = _credentials(ctx, ["revoked"])
    with unit_of_work(ctx.engine) as session:
        future, _ = add_student(session, ctx.box)
        session.add(Credential(student_id=future.id or 0, state="active", policy="standalone",
                               valid_until=date(2027, 4, 1), created_at=NOW, updated_at=NOW))
    today = date(2027, 4, 1)  # valid_until 1 April is still valid today
    assert expire_validity(ctx.engine, now=NOW, today=today, batch_size=3) == 10
    assert expire_validity(ctx.engine, now=NOW, today=today, batch_size=3) == 0
    with Session(ctx.engine) as session:
        states = dict(session.exec(select(Credential.id, Credential.state)).all())
        events = session.exec(select(CredentialEvent.credential_id, CredentialEvent.from_state)
                              .order_by(col(CredentialEvent.credential_id))).all()
    assert {states[i] for i in due} == {"expired"} and states[spared[0]] == "revoked"
    with Session(ctx.engine) as session:
        cancelled = session.exec(select(OutboxMessage.credential_id).where(OutboxMessage.status == "cancelled")
                                 .order_by(col(OutboxMessage.credential_id))).all()
    assert cancelled == sorted(due + due)  # each due one's reminder and activation mail, no other's
    assert sorted(states.values()).count("active") == 1
    assert [cid for cid, _ in events] == due
    assert sorted(f for _, f in events) == ["active"] * 7 + ["pending_activation"] * 3


def test_batches_page_through_mixed_end_dates_in_index_order(ctx: AppContext) -> None:
    """Each batch starts after the previous one's (valid_until, id): rows of several end dates,
    inserted out of date order, are each moved once, whatever the batch boundaries."""
    ends = [date(2027, 3, 31), date(2026, 10, 31), date(2027, 3, 30), date(2026, 10, 31), date(2027, 3, 31),
            date(2027, 3, 30), date(2026, 3, 31)]
    ids = []
    with unit_of_work(ctx.engine) as session:
        for end in ends:
            student, _ = add_student(session, ctx.box)
            row = Credential(student_id=student.id or 0, state="active", policy="standalone", valid_until=end,
                             created_at=NOW, updated_at=NOW)
            session.add(row)
            session.flush()
            ids.append(row.id or 0)
    assert expire_validity(ctx.engine, now=NOW, today=date(2027, 4, 1), batch_size=2) == len(ends)
    with Session(ctx.engine) as session:
        events = session.exec(select(CredentialEvent.credential_id)).all()
        states = set(session.exec(select(Credential.state)).all())
    assert sorted(events) == sorted(ids) and states == {"expired"}
