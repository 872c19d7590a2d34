"""The audit trail: who did what, when, to which credential. Details never carry PII."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlmodel import Session

from core.storage.models import AuditEvent

__all__ = ["record"]


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
    event = AuditEvent(
        at=at,
        actor=actor,
        action=action,
        student_id=student_id,
        credential_id=credential_id,
        thread_id=thread_id,
        detail=json.dumps(detail, default=str, sort_keys=True) if detail else "",
    )
    session.add(event)
    return event
