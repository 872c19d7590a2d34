"""Graduation revokes at once when the settings say so; removal waits for the month of grace."""

from __future__ import annotations

from datetime import date

from sqlmodel import Session, select

from core.app.context import AppContext
from core.jobs import sweep
from core.storage.db import unit_of_work
from core.storage.models import AuditEvent, Student
from tests.factories import issue
from tests.support.lifecycle import activate, at, credential, outbox


def _set_status(ctx: AppContext, student_id: int, status: str, removed_on: date | None = None) -> None:
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        assert student is not None
        student.status, student.removed_on = status, removed_on
        session.add(student)


def test_graduation_revokes_at_once(ctx: AppContext) -> None:
    at(ctx, "2026-10-05T11:00:00+02:00")
    student_id, cid = issue(ctx)
    activate(ctx, cid)
    _set_status(ctx, student_id, "graduated")
    assert sweep(ctx)["graduation_revoked"] == 1
    assert sweep(ctx)["graduation_revoked"] == 0
    ended = credential(ctx, cid)
    assert (ended.state, ended.end_reason) == ("revoked", "graduation")
    assert [r.kind for r in outbox(ctx)] == ["activation", "revoked"]
    with Session(ctx.engine) as session:
        actions = [a.action for a in session.exec(select(AuditEvent).where(AuditEvent.credential_id == cid)).all()]
    assert actions[-1] == "credential.revoked"


def test_graduation_kept_until_validity_when_settings_say_so(ctx: AppContext) -> None:
    ctx.settings.credential.revoke_on_graduation = False
    at(ctx, "2026-10-05T11:00:00+02:00")
    student_id, cid = issue(ctx)
    activate(ctx, cid)
    _set_status(ctx, student_id, "graduated")
    assert sweep(ctx)["graduation_revoked"] == 0
    assert credential(ctx, cid).state == "active"


def test_removal_grace_is_one_calendar_month(ctx: AppContext) -> None:
    at(ctx, "2026-10-05T11:00:00+02:00")
    student_id, cid = issue(ctx)
    activate(ctx, cid)
    _set_status(ctx, student_id, "removed", date(2026, 9, 30))
    at(ctx, "2026-10-30T12:00:00+01:00")  # deadline 30 October: still valid
    assert sweep(ctx)["removal_revoked"] == 0
    at(ctx, "2026-10-31T00:00:00+01:00")
    assert sweep(ctx)["removal_revoked"] == 1
    assert credential(ctx, cid).end_reason == "removal_grace_ended"
