"""The expiry sweep: activation windows passed, validity ended, removal grace ended, graduation.

Each part selects what is due through an index, in batches of `jobs.batch_size` (by
database: core.jobs.batch), one transaction per batch. Every move is the one
`core.credentials.lifecycle.transition` makes (state, timestamps, wiped activation hashes, a
CredentialEvent and an audit row, the credential's waiting activation mail and reminders
cancelled); the high-volume one, validity ended, is done set-based by `expire_validity` with
exactly those effects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.credentials.lifecycle import ENDS_WITH_THE_CREDENTIAL, EndReason, cancel_reason
from core.credentials.service import expire_activation_window, revoke
from core.jobs.batch import batch_size
from core.jobs.ledger import JobResult
from core.messaging.notify import chat_links, email_language, email_languages, queue_chat, queue_email
from core.storage.db import unit_of_work
from core.storage.models import (
    LIVE_STATES,
    AuditEvent,
    Credential,
    CredentialState,
    OutboxStatus,
    Student,
    StudentStatus,
)
from core.storage.models import UTCDateTime as _UTC
from core.students.semester import removal_deadline

__all__ = ["ACTOR", "VALIDITY_DUE_STATES", "expire_validity", "sweep"]

ACTOR = "jobs"
S = CredentialState
VALIDITY_DUE_STATES = (S.PENDING_ACTIVATION, S.ACTIVE)
_LIVE = [s.value for s in LIVE_STATES]
# add_months(d, 1) is never earlier than d + 28 days: a safe, indexable lower bound for the grace.
_SHORTEST_GRACE = timedelta(days=28)


def sweep(ctx: AppContext) -> JobResult:
    """Every expiry and revocation due at ctx.clock.now(); returns the counts."""
    now, today = ctx.clock.now(), ctx.clock.today()
    result: JobResult = {
        "removal_revoked": _revoke_removed(ctx, today),
        "graduation_revoked": (
            _revoke_graduated(ctx) if ctx.settings.credential.revoke_on_graduation else 0
        ),
        "activation_expired": _expire_activation_windows(ctx, now),
    }
    result["validity_expired"] = expire_validity(
        ctx.engine, now=now, today=today, batch_size=batch_size(ctx)
    )
    return result


def _for_update(query: sa.Select, session: Session) -> sa.Select:  # type: ignore[type-arg]
    # Two sweeps on one PostgreSQL (a leadership hand-over mid-run) must not move a row twice.
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True, of=Credential)  # type: ignore[arg-type]
    return query


# A student removed from the list, or graduated, may not apply again: the generic revocation
# e-mail's "apply again" would send them to a refusal. Their notice points to the dean's office.
_ENDED_NOTICES = {
    EndReason.REMOVAL_GRACE_ENDED: "jobs.notice.revoked_removal",
    EndReason.GRADUATION: "jobs.notice.revoked_graduation",
}


def _revoke_students(
    ctx: AppContext,
    students: sa.Select,  # type: ignore[type-arg]
    reason: EndReason,
    due: Callable[[Student], bool] | None,
) -> int:
    """Revoke the live credentials of the students selected, a batch of students per transaction.

    Driven from the student side (ix_student_status): few students are removed or graduated,
    and scanning a million credentials to find their few would cost the whole table each run.
    """
    with Session(ctx.engine) as session:
        student_ids = list(session.exec(students).all())
    done, size = 0, batch_size(ctx)
    for start in range(0, len(student_ids), size):
        with unit_of_work(ctx.engine) as session:
            batch = session.exec(
                _for_update(
                    select(Credential, Student)
                    .join(Student, col(Student.id) == Credential.student_id)
                    .where(col(Credential.student_id).in_(student_ids[start : start + size]))
                    .where(col(Credential.state).in_(_LIVE))
                    .order_by(col(Credential.id)),
                    session,
                )
            ).all()
            languages = email_languages(session, [student.id or 0 for _, student in batch])
            for credential, student in batch:
                if due is not None and not due(student):
                    continue
                revoke(ctx, session, credential, reason=reason, actor=ACTOR, notify=False)
                queue_email(
                    ctx, session, key=f"revoked:{credential.public_id}", catalog_key=_ENDED_NOTICES[reason],
                    kind="revoked", student=student, credential=credential,
                    language=email_language(ctx, languages, student.id), params={},
                )
                done += 1
    return done


def _revoke_removed(ctx: AppContext, today: date) -> int:
    """Removed from the student list (skreślony): revoked once the one-month grace has ended."""
    students = (
        select(Student.id)
        .where(Student.status == StudentStatus.REMOVED)
        .where(col(Student.removed_on).is_not(None))
        .where(col(Student.removed_on) < today - _SHORTEST_GRACE)
    )

    # Valid through the deadline day itself, like valid_until.
    def due(student: Student) -> bool:
        return student.removed_on is not None and removal_deadline(student.removed_on) < today

    return _revoke_students(ctx, students, EndReason.REMOVAL_GRACE_ENDED, due)


def _revoke_graduated(ctx: AppContext) -> int:
    students = select(Student.id).where(Student.status == StudentStatus.GRADUATED)
    return _revoke_students(ctx, students, EndReason.GRADUATION, None)


def _expire_activation_windows(ctx: AppContext, now: datetime) -> int:
    """Activation data unused for 30 days dies; the student is told to apply again (e-mail, and chat)."""
    done, seen = 0, set[int]()
    while True:
        with unit_of_work(ctx.engine) as session:
            # No ORDER BY id: it would lead SQLite to walk the primary key instead of the
            # (state, activation_deadline) index. Moved rows leave the due set by themselves.
            batch = session.exec(
                _for_update(
                    select(Credential, Student)
                    .join(Student, col(Student.id) == Credential.student_id)
                    .where(Credential.state == S.PENDING_ACTIVATION)
                    .where(col(Credential.activation_deadline) < now)
                    .limit(batch_size(ctx)),
                    session,
                )
            ).all()
            if not batch or any(c.id in seen for c, _ in batch):
                return done
            student_ids = [student.id or 0 for _, student in batch]
            links, languages = chat_links(session, student_ids), email_languages(session, student_ids)
            for credential, student in batch:
                seen.add(credential.id or 0)
                expire_activation_window(ctx, session, credential, now=now, actor=ACTOR)
                link = links.get(student.id or 0)
                key = f"activation-expired:{credential.public_id}"
                queue_email(
                    ctx, session, key=key, catalog_key="jobs.notice.activation_expired",
                    kind="activation_expired", student=student, credential=credential,
                    language=email_language(ctx, languages, student.id), params={},
                )
                if link is not None:
                    queue_chat(
                        ctx, session, key=f"{key}:{link.channel}",
                        catalog_key="jobs.notice.activation_expired", kind="activation_expired",
                        link=link, credential=credential, params={"first_name": student.first_name},
                        buttons=[("jobs.button.apply", "menu:request")],
                    )
                done += 1


def expire_validity(engine: Engine, *, now: datetime, today: date, batch_size: int) -> int:
    """Credentials valid until a day before `today` (Warsaw) become expired, set-based, in batches.

    The effects are those of `transition(..., EXPIRED, reason="validity_ended")`; the
    `state = :from` condition in the UPDATE makes the recorded from-state certain even when
    another process moves a row in between (PostgreSQL re-checks it after waiting for the row).
    """
    total = 0
    due = [s.value for s in VALIDITY_DUE_STATES]
    while True:
        with engine.begin() as connection:
            rows = connection.execute(
                sa.select(col(Credential.id), col(Credential.state))
                .where(col(Credential.state).in_(due))
                .where(col(Credential.valid_until) < today)
                .limit(batch_size)
            ).all()
            if not rows:
                return total
            by_state: dict[str, list[int]] = {}
            for credential_id, state in rows:
                by_state.setdefault(state, []).append(credential_id)
            moved = sum(
                _expire_batch(connection, ids, from_state, now=now, today=today)
                for from_state, ids in by_state.items()
            )
        total += moved
        if moved == 0:  # everything in the batch was moved by someone else meanwhile
            return total


_REASON = EndReason.VALIDITY_ENDED.value
_TO = S.EXPIRED.value
_ACTION = f"credential.{_TO}"

# What lifecycle.transition's outbox.cancel_waiting does, for the credentials of a batch.
_ENDED_KINDS = ", ".join(f"'{kind}'" for kind in sorted(ENDS_WITH_THE_CREDENTIAL))
_CANCEL_ENDED = (
    "UPDATE outbox SET status = :cancelled, body = NULL, lease_until = NULL, last_error = :cancel_reason, "
    f"next_attempt_at = :now WHERE status = :pending AND kind IN ({_ENDED_KINDS}) AND credential_id IN "
)
_CANCEL_VALUES = {"cancelled": OutboxStatus.CANCELLED.value, "pending": OutboxStatus.PENDING.value,
                  "cancel_reason": cancel_reason(S.EXPIRED, _REASON)}

_PG_EXPIRE = sa.text(
    f"""
    WITH moved AS (
        UPDATE credential
           SET state = :to_state, updated_at = :now, ended_at = :now, end_reason = :reason,
               code_hash = NULL, qr_token_hash = NULL
         WHERE id = ANY(:ids) AND state = :from_state AND valid_until < :today
        RETURNING id
    ), events AS (
        INSERT INTO credential_event (credential_id, from_state, to_state, actor, reason, at)
        SELECT id, :from_state, :to_state, :actor, :reason, :now FROM moved
    ), cancelled AS (
        {_CANCEL_ENDED} (SELECT id FROM moved)
    )
    SELECT count(*), min(id), max(id) FROM moved
    """
)


_SQLITE_MOVING = (
    "id IN (SELECT value FROM json_each(:ids)) AND state = :from_state AND valid_until < :today"
)
_SQLITE_EVENTS = sa.text(
    "INSERT INTO credential_event (credential_id, from_state, to_state, actor, reason, at) "
    f"SELECT id, :from_state, :to_state, :actor, :reason, :now FROM credential WHERE {_SQLITE_MOVING}"
).bindparams(sa.bindparam("now", type_=_UTC()), sa.bindparam("today", type_=sa.Date()))
_SQLITE_RANGE = sa.text(
    f"SELECT min(id), max(id) FROM credential WHERE {_SQLITE_MOVING}"
).bindparams(sa.bindparam("today", type_=sa.Date()))
_SQLITE_CANCEL = sa.text(
    f"{_CANCEL_ENDED} (SELECT id FROM credential WHERE {_SQLITE_MOVING})"
).bindparams(sa.bindparam("now", type_=_UTC()), sa.bindparam("today", type_=sa.Date()))
_SQLITE_UPDATE = sa.text(
    "UPDATE credential SET state = :to_state, updated_at = :now, ended_at = :now, end_reason = :reason, "
    f"code_hash = NULL, qr_token_hash = NULL WHERE {_SQLITE_MOVING}"
).bindparams(sa.bindparam("now", type_=_UTC()), sa.bindparam("today", type_=sa.Date()))


def _audit_batch(connection: Connection, from_state: str, moved: int, first: int | None, last: int | None,
                 now: datetime) -> None:
    """One audit row per batch: each credential's own move is in credential_event (who, why, when),
    so a row per credential here would only double the writes of a million-row sweep."""
    if not moved:
        return
    detail = json.dumps({"count": moved, "first_credential_id": first, "from_state": from_state,
                         "last_credential_id": last, "reason": _REASON}, sort_keys=True)
    connection.execute(sa.insert(AuditEvent).values(at=now, actor=ACTOR, action=f"{_ACTION}.batch", detail=detail))


def _expire_batch(
    connection: Connection, ids: Sequence[int], from_state: str, *, now: datetime, today: date
) -> int:
    params = {
        "ids": list(ids), "from_state": from_state, "to_state": _TO, "reason": _REASON,
        "actor": ACTOR, "now": now, "today": today, **_CANCEL_VALUES,
    }
    if connection.dialect.name == "postgresql":
        moved, first, last = connection.execute(_PG_EXPIRE, params).one()
        _audit_batch(connection, from_state, int(moved), first, last, now)
        return int(moved)
    # SQLite (one writer at a time): the rows cannot change between these statements. The ids
    # travel as one JSON parameter: expanding a 1,000-item IN list costs more than the UPDATE.
    sqlite_params = {**params, "ids": json.dumps(list(ids))}
    connection.execute(_SQLITE_EVENTS, sqlite_params)
    connection.execute(_SQLITE_CANCEL, sqlite_params)
    first, last = connection.execute(_SQLITE_RANGE, sqlite_params).one()
    result = connection.execute(_SQLITE_UPDATE, sqlite_params)
    moved = int(result.rowcount)
    _audit_batch(connection, from_state, moved, first, last, now)
    return moved
