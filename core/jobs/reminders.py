"""Reminders: validity ending, activation window closing, a new semester to renew in. Each once.

What they advise follows the issuing policy: stand-alone, renew ("Renew"); under the ELS
policy a credential is never renewed, so they advise a new application ("Apply") once the ELS
card is extended (core.credentials.renewal.replacement_check), never "Renew".

"Once per credential and kind" is a fact of the database: a ReminderLog row (unique
credential_id, kind) is inserted in the same transaction as the outbox row, so a second
run, a restart or another process gets a unique violation and sends nothing.

Kinds: `validity-{days}-{valid_until}` (the end date is part of the kind because a renewal
keeps the credential and moves its end: the next semester has its own reminders),
`activation-{days}`, `semester-start-{YYYY-MM-DD}`. Of a family only the most urgent due
reminder is sent: after downtime the 3-day one, never the 14-day one as well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.app.clock import WARSAW
from core.app.context import AppContext
from core.credentials.compose import format_date, format_datetime
from core.credentials.renewal import ELS_APPLY_AGAIN, renewal_check, replacement_check
from core.credentials.service import effective_activation_deadline
from core.jobs.batch import batch_size
from core.jobs.ledger import JobResult
from core.messaging.notify import chat_links, email_language, email_languages, queue_chat, queue_email
from core.storage.db import unit_of_work
from core.storage.models import ChatLink, Credential, CredentialState, ReminderLog, Student
from core.students.semester import semester_start

__all__ = ["Reminder", "activation_due_days", "days_left", "due_days", "in_sending_hours", "reminders"]

S = CredentialState


@dataclass(frozen=True)
class Reminder:
    """One reminder to queue: its ledger kind, catalog texts and placeholders."""

    kind: str
    catalog_key: str
    params: dict[str, str]
    buttons: Sequence[tuple[str, str]] = ()


# Decides, for a credential and its student, the reminder due now (None: nothing due).
Decide = Callable[[Credential, Student], Reminder | None]


def due_days(days_before: Sequence[int], end: date, today: date) -> int | None:
    """The most urgent reminder day already reached: of [14, 3] with 2 days left, 3."""
    reached = [d for d in days_before if today >= end - timedelta(days=d)]
    return min(reached) if reached else None


def activation_due_days(days_before: Sequence[int], deadline: datetime, today: date, from_hour: int) -> int | None:
    """`due_days` for an activation deadline (an instant), in the sending hours before it.

    A reminder falls on the Warsaw day `days` before the deadline's day; when the sending
    hours of that day begin only at or after the deadline (a deadline at 05:00, reminded
    "0 days before"), it goes the day before instead: never lost to the night.
    """
    end = deadline.astimezone(WARSAW)
    reached = []
    for days in days_before:
        day = end.date() - timedelta(days=days)
        if datetime.combine(day, time(from_hour), tzinfo=WARSAW) >= end:
            day -= timedelta(days=1)
        if today >= day:
            reached.append(days)
    return min(reached) if reached else None


def days_left(valid_until: date, today: date) -> int:
    """Days of validity left counting today: valid through 15.01, on 12.01 that is 4 (12, 13, 14, 15)."""
    return (valid_until - today).days + 1


def in_sending_hours(ctx: AppContext, now: datetime) -> bool:
    """Inside the daytime window (Europe/Warsaw) in which reminders may go."""
    settings = ctx.settings.reminders
    return settings.send_from_hour <= now.astimezone(WARSAW).hour < settings.send_until_hour


def reminders(ctx: AppContext) -> JobResult:
    """Queue every reminder due at ctx.clock.now(); returns counts per family.

    Outside the sending hours nothing is queued: the first run inside them sends what is due
    (`due_days` counts from the day a reminder falls on, so a late one still goes).
    """
    now, today = ctx.clock.now(), ctx.clock.today()
    settings = ctx.settings.reminders
    result: JobResult = {"validity": 0, "activation": 0, "semester_start": 0, "already_sent": 0}
    if not in_sending_hours(ctx, now):
        result["waiting"] = (
            f"outside the sending hours {settings.send_from_hour:02d}:00-{settings.send_until_hour:02d}:00 "
            "Europe/Warsaw"
        )
        return result

    validity_days = sorted({d for d in settings.validity_days_before if d >= 0})
    if validity_days:
        def validity(credential: Credential, student: Student) -> Reminder | None:
            days = due_days(validity_days, credential.valid_until, today)
            if days is None:
                return None
            kind = f"validity-{days}-{credential.valid_until.isoformat()}"
            params = {"valid_until": format_date(credential.valid_until),
                      "days": str(days_left(credential.valid_until, today))}
            check = renewal_check(ctx, student, credential)
            if check.possible:
                return Reminder(kind, "jobs.reminder.validity", params, [("jobs.button.renew", "menu:renew")])
            if check.reason == ELS_APPLY_AGAIN:
                # ELS policy: never renewed; a new application replaces it, once the card is extended.
                replacement = replacement_check(ctx, student, credential)
                if replacement.possible and replacement.new_valid_until is not None:
                    return Reminder(kind, "jobs.reminder.validity_els_apply",
                                    {**params, "new_valid_until": format_date(replacement.new_valid_until)},
                                    [("jobs.button.apply", "menu:request")])
                if replacement.reason == "els_not_extended":
                    # The ID ends with the card: extend it, then apply.
                    return Reminder(kind, "jobs.reminder.validity_els", params,
                                    [("jobs.button.apply", "menu:request")])
            # Not eligible (or not yet renewable): no advice we can give that would work.
            return None

        query = (
            _candidates()
            .where(Credential.state == S.ACTIVE)
            .where(col(Credential.valid_until) >= today)
            .where(col(Credential.valid_until) <= today + timedelta(days=max(validity_days)))
        )
        _send(ctx, query, validity, "validity", result)

    activation_days = sorted({d for d in settings.activation_days_before if d >= 0})
    if activation_days:
        def activation(credential: Credential, student: Student) -> Reminder | None:
            deadline = credential.activation_deadline
            if deadline is None or deadline <= now:
                return None
            if effective_activation_deadline(student, credential) != deadline:
                # Removed from the student list: the credential ends before its data would; we do
                # not urge a student who is leaving to activate something about to end.
                return None
            days = activation_due_days(activation_days, deadline, today, settings.send_from_hour)
            if days is None:
                return None
            return Reminder(f"activation-{days}", "jobs.reminder.activation",
                            {"deadline": format_datetime(deadline)})

        # The instant range is a coarse, indexed cut; the Warsaw calendar decides in `activation`.
        query = (
            _candidates()
            .where(Credential.state == S.PENDING_ACTIVATION)
            .where(col(Credential.activation_deadline) > now)
            .where(col(Credential.activation_deadline) < now + timedelta(days=max(activation_days) + 2))
        )
        _send(ctx, query, activation, "activation", result)

    start = semester_start(today)
    if settings.semester_start and today >= start + timedelta(days=settings.semester_start_days_after):
        def semester(credential: Credential, student: Student) -> Reminder | None:
            check = renewal_check(ctx, student, credential)
            if check.reason == ELS_APPLY_AGAIN:
                # ELS policy: a new application once the card is extended for the new semester
                # (whether it already is or not: the text says both), never "renew".
                replacement = replacement_check(ctx, student, credential)
                if replacement.reason not in ("ok", "els_not_extended"):
                    return None
                return Reminder(
                    f"semester-start-{start.isoformat()}", "jobs.reminder.semester_start_els",
                    {"valid_until": format_date(credential.valid_until)},
                    [("jobs.button.apply", "menu:request")],
                )
            if not check.possible or check.new_valid_until is None:
                return None
            return Reminder(
                f"semester-start-{start.isoformat()}", "jobs.reminder.semester_start",
                {"valid_until": format_date(credential.valid_until),
                 "new_valid_until": format_date(check.new_valid_until)},
                [("jobs.button.renew", "menu:renew")],
            )

        # renewal_check (replacement_check) refuses anything ending later than the renewal window:
        # do not even load it.
        # A credential issued in this semester needs no "the semester has started" nudge.
        window = timedelta(days=ctx.settings.credential.renewal_window_days)
        started = datetime.combine(start, time(0), tzinfo=WARSAW)
        query = (
            _candidates()
            .where(Credential.state == S.ACTIVE)
            .where(col(Credential.valid_until) >= today)
            .where(col(Credential.valid_until) <= today + window)
            .where(col(Credential.created_at) < started)
        )
        _send(ctx, query, semester, "semester_start", result)
    return result


def _candidates() -> sa.Select:  # type: ignore[type-arg]
    return select(Credential, Student).join(Student, col(Student.id) == Credential.student_id)


def _send(ctx: AppContext, query: sa.Select, decide: Decide, family: str, result: JobResult) -> None:  # type: ignore[type-arg]
    """Keyset batches over credential id, one transaction per batch, a savepoint per reminder."""
    last_id = 0
    while True:
        with unit_of_work(ctx.engine) as session:
            batch = session.exec(
                query.where(col(Credential.id) > last_id)
                .order_by(col(Credential.id))
                .limit(batch_size(ctx))
            ).all()
            if not batch:
                return
            last_id = batch[-1][0].id or 0
            decided = [(c, s, r) for c, s in batch if (r := decide(c, s)) is not None]
            if not decided:
                continue
            logged = set(
                session.exec(
                    select(ReminderLog.credential_id, ReminderLog.kind).where(
                        col(ReminderLog.credential_id).in_([c.id for c, _, _ in decided])
                    )
                ).all()
            )
            student_ids = [s.id or 0 for _, s, _ in decided]
            links, languages = chat_links(session, student_ids), email_languages(session, student_ids)
            for credential, student, reminder in decided:
                if (credential.id, reminder.kind) in logged:
                    continue
                language = email_language(ctx, languages, student.id)
                if _queue_once(ctx, session, credential, student, reminder, links.get(student.id or 0), language):
                    result[family] += 1
                else:
                    result["already_sent"] += 1


def _queue_once(
    ctx: AppContext,
    session: Session,
    credential: Credential,
    student: Student,
    reminder: Reminder,
    link: ChatLink | None,
    language: str,
) -> bool:
    """The ledger row and the outbox row together, or neither; False when another run was first.

    `link`: the usable chat, if any; `language`: the one the student chose, for the e-mail.
    """
    now = ctx.clock.now()
    key = f"reminder:{credential.public_id}:{reminder.kind}"
    try:
        with session.begin_nested():
            session.add(ReminderLog(credential_id=credential.id or 0, kind=reminder.kind, created_at=now))
            session.flush()
            if link is not None:
                queue_chat(
                    ctx, session, key=key, catalog_key=reminder.catalog_key, kind="reminder",
                    link=link, credential=credential,
                    params={"first_name": student.first_name, **reminder.params},
                    buttons=reminder.buttons,
                )
            else:
                queue_email(
                    ctx, session, key=key, catalog_key=reminder.catalog_key, kind="reminder",
                    student=student, credential=credential,
                    language=language, params=reminder.params,
                )
    except IntegrityError:
        return False
    return True
