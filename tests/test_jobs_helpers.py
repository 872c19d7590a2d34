"""Helpers shared by the lifecycle-job tests (no tests here): issue, activate, read the outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.credentials import service
from core.messaging.outbox import open_body
from core.storage.db import unit_of_work
from core.storage.models import ChatLink, Credential, OutboxMessage
from tests.conftest import add_student


def at(ctx: AppContext, moment: str) -> None:
    """Move the injected clock to an ISO instant (with its offset)."""
    assert isinstance(ctx.clock, FixedClock)
    ctx.clock.set(datetime.fromisoformat(moment))


def issue(ctx: AppContext, **student: Any) -> tuple[int, int]:
    """A student in the register and a credential requested for them: (student id, credential id)."""
    with unit_of_work(ctx.engine) as session:
        row, _ = add_student(session, ctx.box, **student)
        credential = service.request_credential(ctx, session, row, channel="console", actor="student")
        return row.id or 0, credential.id or 0


def activate(ctx: AppContext, credential_id: int) -> None:
    """What the student does in mObywatel with the code from the activation e-mail."""
    with Session(ctx.engine) as session:
        row = session.exec(
            select(OutboxMessage).where(OutboxMessage.credential_id == credential_id,
                                        OutboxMessage.kind == "activation")
        ).one()
        code = open_body(ctx.box, row).text.split("Kod aktywacyjny: ")[1].split()[0]
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        service.activate(ctx, session, credential, code, actor="student")


def link_chat(ctx: AppContext, student_id: int, language: str = "pl", account_id: str = "4242", *,
              channel: str = "telegram", blocked_at: datetime | None = None) -> None:
    with unit_of_work(ctx.engine) as session:
        session.add(ChatLink(channel=channel, account_id=account_id, student_id=student_id,
                             language=language, bound_at=ctx.clock.now(), blocked_at=blocked_at))


def outbox(ctx: AppContext, after_id: int = 0) -> list[OutboxMessage]:
    with Session(ctx.engine) as session:
        return list(session.exec(
            select(OutboxMessage).where(col(OutboxMessage.id) > after_id).order_by(col(OutboxMessage.id))
        ).all())


def credential(ctx: AppContext, credential_id: int) -> Credential:
    with Session(ctx.engine) as session:
        found = session.get(Credential, credential_id)
        assert found is not None
        return found
