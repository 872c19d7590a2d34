"""The audit trail: who did what, when, to which credential. Details never carry PII."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from core.storage.models import AuditEvent

__all__ = ["insert", "record"]

_INSERT = sa.insert(AuditEvent.__table__)  # type: ignore[attr-defined]


def _values(at: datetime, actor: str, action: str, student_id: int | None, credential_id: int | None,
            thread_id: int | None, detail: dict[str, Any]) -> dict[str, Any]:
    return {"at": at, "actor": actor, "action": action, "student_id": student_id, "credential_id": credential_id,
            "thread_id": thread_id, "detail": json.dumps(detail, default=str, sort_keys=True) if detail else ""}


def record(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    student_id: int | None = None,
    credential_id: int | None = None,
    thread_id: int | None = None,
    **detail: Any,
) -> AuditEvent:
    event = AuditEvent(**_values(at, actor, action, student_id, credential_id, thread_id, detail))
    session.add(event)
    return event


def insert(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    student_id: int | None = None,
    credential_id: int | None = None,
    thread_id: int | None = None,
    **detail: Any,
) -> None:
    """`record` for a hot path that needs no object back: one INSERT on the session's connection
    now, in its transaction, instead of an ORM object flushed later (the flush cost more)."""
    session.connection().execute(_INSERT, _values(at, actor, action, student_id, credential_id, thread_id, detail))
