"""What the console's pages read: the inbox with its filters and due times, a thread with the
student's card, the dashboard's figures. Plain functions over a Session, no web types."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.credentials import service as credentials
from core.storage.models import (
    AuditEvent,
    Credential,
    CredentialEvent,
    InboundMail,
    JobRun,
    OutboxMessage,
    OutboxStatus,
    Student,
    SupportMessage,
    SupportThread,
    ThreadStatus,
)
from core.support import threads as support

__all__ = ["InboxFilter", "InboxRow", "dashboard", "inbox", "student_card", "thread_view"]

STATUSES = ("open", "all", "escalated", "claimed", "answered", "closed")
INBOX_LIMIT = 200


@dataclass(frozen=True)
class InboxFilter:
    status: str = "open"
    channel: str = ""
    claimed: str = ""  # "", "me", "nobody", or a login
    q: str = ""
    me: str = ""

    @classmethod
    def parse(cls, params: Any, me: str) -> InboxFilter:
        status = str(params.get("status") or "open")
        return cls(status=status if status in STATUSES else "open", channel=str(params.get("channel") or "")[:16],
                   claimed=str(params.get("claimed") or "")[:64], q=str(params.get("q") or "").strip()[:200], me=me)


@dataclass(frozen=True)
class InboxRow:
    thread: SupportThread
    student: str
    due_at: datetime | None  # the first answer is due; None once answered (or closed)
    overdue: bool
    age: timedelta


def _first_answers(session: Session, thread_ids: list[int]) -> dict[int, datetime]:
    if not thread_ids:
        return {}
    rows = session.execute(
        sa.select(col(SupportMessage.thread_id), sa.func.min(col(SupportMessage.created_at)))
        .where(col(SupportMessage.thread_id).in_(thread_ids), col(SupportMessage.direction) == "out",
               col(SupportMessage.author).startswith("staff:"))
        .group_by(col(SupportMessage.thread_id))).all()
    return {thread_id: first for thread_id, first in rows}


def inbox(ctx: AppContext, session: Session, chosen: InboxFilter) -> list[InboxRow]:
    now = ctx.clock.now()
    query = select(SupportThread)
    if chosen.status == "open":
        query = query.where(SupportThread.status != ThreadStatus.CLOSED)
    elif chosen.status != "all":
        query = query.where(SupportThread.status == chosen.status)
    if chosen.channel:
        query = query.where(SupportThread.channel == chosen.channel)
    if chosen.claimed == "nobody":
        query = query.where(col(SupportThread.claimed_by).is_(None))
    elif chosen.claimed:
        query = query.where(SupportThread.claimed_by == (chosen.me if chosen.claimed == "me" else chosen.claimed))
    if chosen.q:
        words = chosen.q
        if words.upper().startswith("[MLEG-") or words.isdigit():
            number = "".join(c for c in words if c.isdigit())
            query = query.where(SupportThread.id == int(number or 0))
        else:
            pattern = f"%{words.lower()}%"
            in_messages = select(SupportMessage.thread_id).where(sa.func.lower(col(SupportMessage.body)).like(pattern))
            in_students = select(Student.id).where(sa.or_(
                sa.func.lower(col(Student.last_name)).like(pattern),
                sa.func.lower(col(Student.first_name)).like(pattern),
                col(Student.album) == words))
            query = query.where(sa.or_(sa.func.lower(col(SupportThread.subject)).like(pattern),
                                       sa.func.lower(col(SupportThread.account_id)).like(pattern),
                                       col(SupportThread.id).in_(in_messages),
                                       col(SupportThread.student_id).in_(in_students)))
    threads = list(session.exec(query.order_by(col(SupportThread.created_at)).limit(INBOX_LIMIT)).all())
    answered = _first_answers(session, [t.id for t in threads if t.id is not None])
    students = {s.id: s for s in session.exec(select(Student).where(
        col(Student.id).in_([t.student_id for t in threads if t.student_id]))).all()}
    target = timedelta(minutes=ctx.settings.web.first_response_minutes)
    rows = []
    for thread in threads:
        student = students.get(thread.student_id)
        due = None
        if thread.status != ThreadStatus.CLOSED and thread.id not in answered:
            due = thread.created_at + target
        rows.append(InboxRow(thread=thread, student=f"{student.first_name} {student.last_name}" if student else "",
                             due_at=due, overdue=due is not None and due < now, age=now - thread.created_at))
    # Overdue and soonest due first, then the answered ones by age.
    rows.sort(key=lambda r: (r.due_at is None, r.due_at or r.thread.created_at))
    return rows


def channels(session: Session) -> list[str]:
    return sorted(c for c in session.exec(select(SupportThread.channel).distinct()).all() if c)


def newest_activity(session: Session) -> str:
    """A fingerprint of the inbox: the polling page swaps its rows only when this changed."""
    count, last = session.execute(sa.select(sa.func.count(), sa.func.max(col(SupportThread.updated_at)))
                                  .select_from(SupportThread)).one()
    return f"{count}-{last.isoformat() if last else ''}"


@dataclass
class StudentCard:
    student: Student
    credential: Credential | None
    valid_until: date | None = None
    activation_deadline: datetime | None = None


def student_card(session: Session, student_id: int | None) -> StudentCard | None:
    student = session.get(Student, student_id) if student_id else None
    if student is None:
        return None
    credential = credentials.latest_credential(session, student.id or 0)
    card = StudentCard(student=student, credential=credential)
    if credential is not None:
        card.valid_until = credentials.effective_valid_until(student, credential)
        card.activation_deadline = credentials.effective_activation_deadline(student, credential)
    return card


@dataclass
class ThreadView:
    thread: SupportThread
    messages: list[SupportMessage]
    history: list[AuditEvent]
    deliveries: list[OutboxMessage]
    card: StudentCard | None


def thread_view(session: Session, thread_id: int) -> ThreadView:
    thread = support.get_thread(session, thread_id)
    deliveries = list(session.exec(select(OutboxMessage).where(OutboxMessage.thread_id == thread_id)
                                   .order_by(col(OutboxMessage.id))).all())
    return ThreadView(thread=thread, messages=support.thread_messages(session, thread_id),
                      history=support.thread_history(session, thread_id), deliveries=deliveries,
                      card=student_card(session, thread.student_id))


def credential_history(session: Session, credential_id: int) -> list[CredentialEvent]:
    return list(session.exec(select(CredentialEvent).where(CredentialEvent.credential_id == credential_id)
                             .order_by(col(CredentialEvent.id))).all())


@dataclass
class Dashboard:
    days: list[date]
    escalations: list[int]
    auto_answers: list[int]
    threads_by_status: dict[str, int]
    credentials_by_state: dict[str, int]
    answer_rate: float | None
    median_first_response: timedelta | None
    outbox: dict[str, int]
    oldest_pending: datetime | None
    quarantined: int
    last_jobs: list[JobRun] = field(default_factory=list)


def _per_day(session: Session, action: str, since: datetime, days: list[date]) -> list[int]:
    counts = dict.fromkeys(days, 0)
    for (at,) in session.execute(sa.select(col(AuditEvent.at)).where(col(AuditEvent.action) == action,
                                                                      col(AuditEvent.at) >= since)):
        day = at.date()
        if day in counts:
            counts[day] += 1
    return [counts[d] for d in days]


def dashboard(ctx: AppContext, session: Session, *, span_days: int = 14) -> Dashboard:
    now = ctx.clock.now()
    days = [(now - timedelta(days=n)).date() for n in range(span_days - 1, -1, -1)]
    since = datetime.combine(days[0], datetime.min.time(), tzinfo=now.tzinfo)
    escalations = _per_day(session, "thread.escalated", since, days)
    auto_answers = _per_day(session, "thread.auto_answered", since, days)

    def grouped(column: Any) -> dict[str, int]:
        return {str(k): int(v) for k, v in session.execute(
            sa.select(column, sa.func.count()).group_by(column).order_by(column)).all()}

    recent = list(session.exec(select(SupportThread).where(col(SupportThread.created_at) >= since)).all())
    firsts = _first_answers(session, [t.id for t in recent if t.id is not None])
    waits = [firsts[t.id] - t.created_at for t in recent if t.id in firsts]
    asked = len(recent)
    outbox_counts = grouped(col(OutboxMessage.status))
    oldest = session.execute(sa.select(sa.func.min(col(OutboxMessage.created_at)))
                             .where(col(OutboxMessage.status) == OutboxStatus.PENDING)).scalar()
    quarantined = session.execute(sa.select(sa.func.count()).select_from(InboundMail)
                                  .where(col(InboundMail.status) == "quarantined")).scalar() or 0
    last_runs = sa.select(sa.func.max(col(JobRun.id))).group_by(col(JobRun.name))
    jobs = list(session.exec(select(JobRun).where(col(JobRun.id).in_(last_runs)).order_by(col(JobRun.name))).all())
    return Dashboard(
        days=days, escalations=escalations, auto_answers=auto_answers,
        threads_by_status=grouped(col(SupportThread.status)), credentials_by_state=grouped(col(Credential.state)),
        answer_rate=(len(waits) / asked) if asked else None,
        median_first_response=statistics.median(waits) if waits else None,
        outbox=outbox_counts, oldest_pending=oldest, quarantined=int(quarantined), last_jobs=jobs,
    )
