"""A student's whole year under the lifecycle jobs, with an injected clock: exact messages, none twice."""

from __future__ import annotations

from datetime import date

from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.credentials import renewal as renewal_service
from core.credentials import service
from core.jobs import run_due
from core.messaging.outbox import open_body
from core.storage.db import unit_of_work
from core.storage.models import CredentialEvent, ReminderLog, Student
from tests.factories import issue, link_chat
from tests.support.lifecycle import activate, at, credential, outbox


class Walk:
    """Runs the jobs at an instant (twice, as a restart would) and returns what was queued."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.seen = 0
        self.keys: list[str] = []  # all ever queued: the retention job removes rows done with

    def jobs(self, moment: str) -> list[tuple[str, str, str]]:
        at(self.ctx, moment)
        run_due(self.ctx)
        run_due(self.ctx)  # the same instant again: must queue nothing more
        return self.new()

    def new(self) -> list[tuple[str, str, str]]:
        rows = outbox(self.ctx, self.seen)
        if rows:
            self.seen = rows[-1].id or 0
        self.keys += [r.idempotency_key for r in rows]
        return [(r.idempotency_key, r.channel, r.kind) for r in rows]


def test_a_year_issue_remind_expire_renew_remove_revoke(ctx: AppContext) -> None:
    walk = Walk(ctx)
    at(ctx, "2026-10-05T11:00:00+02:00")
    student_id, cid = issue(ctx)
    pid = credential(ctx, cid).public_id
    # Applied for in October, the winter semester: valid until 31 March.
    assert credential(ctx, cid).valid_until == date(2027, 3, 31)
    assert walk.new() == [(f"activation:{pid}", "email", "activation")]
    at(ctx, "2026-10-06T10:00:00+02:00")
    activate(ctx, cid)
    # Issued in this semester, ending in the next: no "the semester has started" nudge now.
    assert walk.jobs("2026-10-06T10:05:00+02:00") == []
    assert walk.jobs("2026-10-17T09:00:00+02:00") == []  # 31 October means nothing to it

    # The summer semester starts on 1 March; the nudge comes a day after, by e-mail (no chat yet).
    assert walk.jobs("2027-03-01T12:00:00+01:00") == []
    assert walk.jobs("2027-03-02T09:00:00+01:00") == [
        (f"reminder:{pid}:semester-start-2027-03-01", "email", "reminder")]
    nudge = open_body(ctx.box, outbox(ctx)[-1]).text
    assert "valid until 31.03.2027; you can now renew it so that it is valid until 31.10.2027" in nudge

    # 14 days before 31 March, not a day earlier, in the daytime; by e-mail.
    assert walk.jobs("2027-03-16T19:59:00+01:00") == []
    assert walk.jobs("2027-03-17T00:01:00+01:00") == []  # due, but night
    assert walk.jobs("2027-03-17T09:00:00+01:00") == [
        (f"reminder:{pid}:validity-14-2027-03-31", "email", "reminder")]
    assert walk.jobs("2027-03-20T09:00:00+01:00") == []

    # The student binds Telegram (English): the 3-day reminder goes there, with a Renew button.
    link_chat(ctx, student_id, language="en")
    assert walk.jobs("2027-03-27T19:00:00+01:00") == []
    assert walk.jobs("2027-03-28T09:00:00+02:00") == [
        (f"reminder:{pid}:validity-3-2027-03-31", "telegram", "reminder")]
    row = outbox(ctx)[-1]
    message = open_body(ctx.box, row)
    assert row.recipient == "4242" and row.language == "en"
    # Valid the whole of 31 March: 28, 29, 30 and 31 are left.
    assert "valid until 31.03.2027 inclusive (4 days left, including today)" in message.text
    assert [[b.data for b in line] for line in message.buttons] == [["menu:renew"]]

    # Renewed before the end: valid until 31 October; the next semester has its own reminders.
    at(ctx, "2027-03-29T12:00:00+02:00")
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        assert student is not None
        renewal_service.renew(ctx, session, student, credential(ctx, cid), channel="telegram", actor="student")
    assert walk.new() == [(f"renewed:{pid}:2027-10-31", "email", "renewed")]
    assert walk.jobs("2027-04-01T09:00:00+02:00") == []

    # The winter semester starts on 1 October; the nudge comes a day after, on the chat.
    assert walk.jobs("2027-10-01T12:00:00+02:00") == []
    assert walk.jobs("2027-10-02T09:00:00+02:00") == [
        (f"reminder:{pid}:semester-start-2027-10-01", "telegram", "reminder")]
    nudge = open_body(ctx.box, outbox(ctx)[-1]).text
    assert "valid until 31.10.2027; you can now renew it so that it is valid until 31.03.2028" in nudge
    assert walk.jobs("2027-10-17T09:00:00+02:00") == [
        (f"reminder:{pid}:validity-14-2027-10-31", "telegram", "reminder")]
    assert walk.jobs("2027-10-28T09:00:00+02:00") == [
        (f"reminder:{pid}:validity-3-2027-10-31", "telegram", "reminder")]

    # Not renewed: valid through the whole of 31 October (Warsaw, back on CET), expired from 1 November.
    assert walk.jobs("2027-10-31T23:59:00+01:00") == []
    assert credential(ctx, cid).state == "active"
    assert walk.jobs("2027-11-01T00:01:00+01:00") == []
    ended = credential(ctx, cid)
    assert (ended.state, ended.end_reason, ended.code_hash) == ("expired", "validity_ended", None)

    # Applies again: a new credential until 31 March.
    at(ctx, "2027-11-02T10:00:00+01:00")
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        assert student is not None
        new = service.request_credential(ctx, session, student, channel="telegram", actor="student", language="en")
        new_id, new_pid = new.id or 0, new.public_id
    assert credential(ctx, new_id).valid_until == date(2028, 3, 31)
    activate(ctx, new_id)
    assert walk.new() == [(f"activation:{new_pid}", "email", "activation")]

    # Removed from the student list on 10 December: valid through 10 January, revoked on 11 January.
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        assert student is not None
        student.status, student.removed_on = "removed", date(2027, 12, 10)
        session.add(student)
    assert walk.jobs("2028-01-10T23:59:00+01:00") == []
    assert credential(ctx, new_id).state == "active"
    assert walk.jobs("2028-01-11T00:01:00+01:00") == [(f"revoked:{new_pid}", "email", "revoked")]
    revoked = credential(ctx, new_id)
    assert (revoked.state, revoked.end_reason) == ("revoked", "removal_grace_ended")
    revoked_text = open_body(ctx.box, outbox(ctx)[-1]).text
    assert "one month has passed since your removal" in revoked_text
    # Removed students may not apply: the dean's office, not "apply again".
    assert "contact the dean's office" in revoked_text and "skontaktuj się z dziekanatem" in revoked_text
    assert "apply again in the chat" not in revoked_text

    # Nothing more, ever: the spring brings no reminder to a revoked credential.
    assert walk.jobs("2028-03-02T10:00:00+01:00") == []
    assert walk.jobs("2028-03-28T10:00:00+02:00") == []

    with Session(ctx.engine) as session:
        # activation, 2 nudges, 2 x (14-day, 3-day), renewed, activation, revoked
        assert len(walk.keys) == len(set(walk.keys)) == 10
        assert len(session.exec(select(ReminderLog)).all()) == 6
        moves = session.exec(
            select(CredentialEvent.credential_id, CredentialEvent.to_state, CredentialEvent.reason)
            .order_by(col(CredentialEvent.id))
        ).all()
    assert [(m[1], m[2]) for m in moves if m[0] == cid] == [
        ("requested", "application"), ("pending_activation", "activation_data_issued"),
        ("active", "activated"), ("active", "renewed"), ("expired", "validity_ended")]
    assert [(m[1], m[2]) for m in moves if m[0] == new_id][-1] == ("revoked", "removal_grace_ended")
