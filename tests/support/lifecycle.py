"""A credential's life as the jobs see it: move the clock, enrol, request, activate, change the register's
row, read the outbox and the credential."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.credentials import service
from core.credentials.lifecycle import transition
from core.messaging.outbox import open_body
from core.storage.db import unit_of_work
from core.storage.models import Credential, CredentialState, OutboxMessage, Student
from tests.factories import activation_code, add_student


def at(ctx: AppContext, moment: str) -> None:
    """Move the injected clock to an ISO instant (with its offset)."""
    assert isinstance(ctx.clock, FixedClock)
    ctx.clock.set(datetime.fromisoformat(moment))


def mailed_activation_code(ctx: AppContext, credential_id: int) -> str:
    """The code in the activation e-mail queued for the credential."""
    with Session(ctx.engine) as session:
        row = session.exec(
            select(OutboxMessage).where(OutboxMessage.credential_id == credential_id,
                                        OutboxMessage.kind == "activation")
        ).one()
        return activation_code(open_body(ctx.box, row).text)


def activate(ctx: AppContext, credential_id: int, code: str | None = None) -> None:
    """What the student does in mObywatel with the code from the activation e-mail (`code`: one read
    from it earlier)."""
    code = code or mailed_activation_code(ctx, credential_id)
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        service.activate(ctx, session, credential, code, actor="student")


def outbox(ctx: AppContext, after_id: int = 0) -> list[OutboxMessage]:
    """The queued messages after `after_id`, oldest first."""
    with Session(ctx.engine) as session:
        return list(session.exec(
            select(OutboxMessage).where(col(OutboxMessage.id) > after_id).order_by(col(OutboxMessage.id))
        ).all())


def credential(ctx: AppContext, credential_id: int) -> Credential:
    with Session(ctx.engine) as session:
        found = session.get(Credential, credential_id)
        assert found is not None
        return found


def queued(ctx: AppContext, kind: str) -> list[OutboxMessage]:
    """The queued messages of one kind ("activation", "reminder", "revoked"...), oldest first."""
    return [row for row in outbox(ctx) if row.kind == kind]


def enrolled(ctx: AppContext, **overrides: Any) -> tuple[int, str, str]:
    """A committed student: (student id, clear PESEL, album)."""
    with unit_of_work(ctx.engine) as session:
        student, pesel = add_student(session, ctx.box, **overrides)
        return student.id or 0, pesel, student.album


def request_for(ctx: AppContext, student_id: int) -> int:
    """A credential requested for a student already in the register: its id."""
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        assert student is not None
        return service.request_credential(ctx, session, student, channel="console", actor="test").id or 0


def force_active(ctx: AppContext, credential_id: int) -> None:
    """The credential made active without the activation code (what the code would do)."""
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        transition(session, credential, CredentialState.ACTIVE, actor="test", reason="activated",
                   now=ctx.clock.now())


def update_student(ctx: AppContext, student_id: int, **values: Any) -> None:
    """The register's row changed in place (status, removal date...)."""
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        assert student is not None
        for name, value in values.items():
            setattr(student, name, value)
        session.add(student)
