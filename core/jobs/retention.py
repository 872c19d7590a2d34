"""Retention: every kind of personal data the service keeps goes when its period is over.

The periods are settings (`retention.*`, MLEG_RETENTION__*; see `rules`, which `mleg status`
prints): support threads (closed, or never closed and idle) with their messages and raw
e-mails, idle chat conversations, e-mails of no thread, sent and failed outbox rows, the
audit trail, and terms acceptances of accounts no longer linked. Also cleared: wrong-guess
records past any rate-limit window and chat-binding codes that are used or expired. Webhook
updates go when handled more than core.storage.update_store.HANDLED_KEEP ago (their payload, what the
student typed, went when they were handled; one not handled yet is work still to do and stays).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col

from core.app.context import AppContext
from core.app.settings import Settings
from core.jobs.batch import batch_size
from core.jobs.ledger import JobResult
from core.storage.db import checkpoint_wal, unit_of_work
from core.storage.models import (
    LIVE_STATES,
    Application,
    AuditEvent,
    BindingCode,
    ChatLink,
    Conversation,
    Credential,
    CredentialEvent,
    GuessAttempt,
    InboundMail,
    OutboxMessage,
    OutboxStatus,
    ReminderLog,
    StoredUpdate,
    Student,
    StudentStatus,
    SupportMessage,
    SupportThread,
    TermsAcceptance,
)
from core.storage.update_store import HANDLED_KEEP

__all__ = ["retention", "rules"]

# Kept a day past the longest rate-limit window, so a lock never lifts early.
_GUESS_KEEP = timedelta(days=1)


def _days(value: int | None, settings: Settings) -> int:
    return value if value is not None else settings.jobs.retention_days


def rules(settings: Settings) -> list[tuple[str, str]]:
    """(what, how long it is kept) for every kind of personal data: what `mleg status` shows."""
    r = settings.retention
    guess_hours = (settings.limits.guess_window_minutes / 60) + _GUESS_KEEP.days * 24
    return [
        ("support threads", f"{_days(r.threads_days, settings)} days after closing, or after the last activity "
                            "if never closed (messages and raw e-mails with them) (MLEG_RETENTION__THREADS_DAYS)"),
        ("chat conversations", f"{_days(r.conversations_days, settings)} days after the last message "
                               "(MLEG_RETENTION__CONVERSATIONS_DAYS)"),
        ("e-mails of no thread", f"{_days(r.inbound_mail_days, settings)} days after processing "
                                 "(ignored automatic replies, quarantined mail) (MLEG_RETENTION__INBOUND_MAIL_DAYS)"),
        ("outbox", f"sent, failed and cancelled rows {r.outbox_days} days (addresses, chat ids, errors); "
                   "a sent body is wiped at once (MLEG_RETENTION__OUTBOX_DAYS)"),
        ("audit trail", f"{r.audit_days} days (MLEG_RETENTION__AUDIT_DAYS)"),
        ("terms acceptances", f"{r.terms_acceptance_days} days, once the chat account is no longer linked "
                              "(MLEG_RETENTION__TERMS_ACCEPTANCE_DAYS)"),
        ("ended credentials", f"{r.ended_credentials_days} days after they ended, with their history, "
                              "applications and reminder log (MLEG_RETENTION__ENDED_CREDENTIALS_DAYS)"),
        ("former students", f"{r.former_students_days} days after removal or graduation (no live credential): "
                            "the register row, credentials, chat links, acceptances; their tickets go by "
                            "their own rule (MLEG_RETENTION__FORMER_STUDENTS_DAYS)"),
        ("failed guesses", f"{guess_hours:g} h (the guess window and a day)"),
        ("chat codes", "deleted once used or expired"),
    ]


def _delete_in_batches(ctx: AppContext, model: type, query: sa.Select[tuple[int]]) -> int:
    """Delete the rows whose ids `query` selects, a batch per transaction; how many went."""
    deleted = 0
    while True:
        with unit_of_work(ctx.engine) as session:
            ids = session.execute(query.limit(batch_size(ctx))).scalars().all()
            if not ids:
                return deleted
            deleted += session.execute(sa.delete(model).where(col(model.id).in_(ids))).rowcount  # type: ignore[attr-defined]


def retention(ctx: AppContext) -> JobResult:
    now = ctx.clock.now()
    settings = ctx.settings
    cutoff = now - timedelta(days=_days(settings.retention.threads_days, settings))
    batch = batch_size(ctx)
    result: JobResult = {"threads": 0, "support_messages": 0, "inbound_mails": 0, "conversations": 0}
    while True:
        with unit_of_work(ctx.engine) as session:
            # Closed ones by when they closed; ones never closed (open, escalated, answered and
            # left) by their last activity: nobody has touched them for the whole period.
            ids: Sequence[int] = session.execute(
                sa.select(col(SupportThread.id))
                .where(sa.func.coalesce(col(SupportThread.closed_at), col(SupportThread.updated_at)) < cutoff)
                .where(col(SupportThread.updated_at) < cutoff)
                .limit(batch)
            ).scalars().all()
            if not ids:
                break
            result["support_messages"] += session.execute(
                sa.delete(SupportMessage).where(col(SupportMessage.thread_id).in_(ids))
            ).rowcount
            # The raw e-mails of a thread are conversation data too.
            result["inbound_mails"] += session.execute(
                sa.delete(InboundMail).where(col(InboundMail.thread_id).in_(ids))
            ).rowcount
            result["threads"] += session.execute(
                sa.delete(SupportThread).where(col(SupportThread.id).in_(ids))
            ).rowcount
    # Mails of no thread (auto-replies ignored, mail quarantined): done with, and past the period.
    # A quarantined one keeps its raw copy for staff until then; a `new` one is work still to do.
    cutoff = now - timedelta(days=_days(settings.retention.inbound_mail_days, settings))
    while True:
        with unit_of_work(ctx.engine) as session:
            ids = session.execute(
                sa.select(col(InboundMail.id))
                .where(col(InboundMail.thread_id).is_(None), col(InboundMail.status) != "new")
                .where(sa.func.coalesce(col(InboundMail.processed_at), col(InboundMail.received_at)) < cutoff)
                .limit(batch)
            ).scalars().all()
            if not ids:
                break
            result["inbound_mails"] += session.execute(
                sa.delete(InboundMail).where(col(InboundMail.id).in_(ids))
            ).rowcount
    cutoff = now - timedelta(days=_days(settings.retention.conversations_days, settings))
    result["conversations"] = _delete_in_batches(
        ctx, Conversation, sa.select(col(Conversation.id)).where(col(Conversation.updated_at) < cutoff))
    # Done with: sent, failed for good (an answer held for a blocked chat included), or cancelled.
    cutoff = now - timedelta(days=settings.retention.outbox_days)
    result["outbox"] = _delete_in_batches(ctx, OutboxMessage, sa.select(col(OutboxMessage.id)).where(
        col(OutboxMessage.status).in_([OutboxStatus.SENT, OutboxStatus.FAILED, OutboxStatus.CANCELLED]),
        sa.func.coalesce(col(OutboxMessage.sent_at), col(OutboxMessage.created_at)) < cutoff))
    cutoff = now - timedelta(days=settings.retention.audit_days)
    result["audit_events"] = _delete_in_batches(
        ctx, AuditEvent, sa.select(col(AuditEvent.id)).where(col(AuditEvent.at) < cutoff))
    # An acceptance stays while its account is linked: it is why the service may answer it.
    cutoff = now - timedelta(days=settings.retention.terms_acceptance_days)
    linked = sa.select(col(ChatLink.id)).where(
        col(ChatLink.channel) == col(TermsAcceptance.channel),
        col(ChatLink.account_id) == col(TermsAcceptance.account_id))
    result["terms_acceptances"] = _delete_in_batches(ctx, TermsAcceptance, sa.select(col(TermsAcceptance.id)).where(
        col(TermsAcceptance.accepted_at) < cutoff, ~linked.exists()))
    result["students"], result["credentials"] = _former_students_and_ended_credentials(ctx, now)
    guess_cutoff = now - timedelta(minutes=ctx.settings.limits.guess_window_minutes) - _GUESS_KEEP
    with unit_of_work(ctx.engine) as session:
        result["guess_attempts"] = session.execute(
            sa.delete(GuessAttempt).where(col(GuessAttempt.at) < guess_cutoff)
        ).rowcount
        result["binding_codes"] = session.execute(
            sa.delete(BindingCode).where(
                sa.or_(col(BindingCode.used_at).is_not(None), col(BindingCode.expires_at) < now)
            )
        ).rowcount
    with unit_of_work(ctx.engine) as session:
        result["stored_updates"] = session.execute(
            sa.delete(StoredUpdate).where(col(StoredUpdate.handled_at) < now - HANDLED_KEEP)
        ).rowcount
    # What was deleted must not linger in SQLite's write-ahead log (a no-op on PostgreSQL).
    checkpoint_wal(ctx.engine)
    return result


def _delete_credentials(session: Session, ids: Sequence[int]) -> int:
    """Credentials with every row that points at them."""
    for model in (ReminderLog, CredentialEvent, Application):
        session.execute(sa.delete(model).where(col(model.credential_id).in_(ids)))  # type: ignore[attr-defined]
    return session.execute(sa.delete(Credential).where(col(Credential.id).in_(ids))).rowcount or 0


def _former_students_and_ended_credentials(ctx: AppContext, now: datetime) -> tuple[int, int]:
    """Former students past their period (and all that is theirs), then ended credentials past theirs."""
    retention_settings, batch = ctx.settings.retention, batch_size(ctx)
    cutoff = now - timedelta(days=retention_settings.former_students_days)
    live = sa.select(col(Credential.id)).where(
        col(Credential.student_id) == col(Student.id), col(Credential.state).in_(list(LIVE_STATES)))
    students = credentials = 0
    while True:
        with unit_of_work(ctx.engine) as session:
            ids: Sequence[int] = session.execute(
                sa.select(col(Student.id))
                .where(col(Student.status).in_([StudentStatus.REMOVED, StudentStatus.GRADUATED]))
                .where(col(Student.updated_at) < cutoff)
                .where(sa.or_(col(Student.removed_on).is_(None), col(Student.removed_on) < cutoff.date()))
                .where(~live.exists())
                .limit(batch)
            ).scalars().all()
            if not ids:
                break
            credential_ids = session.execute(
                sa.select(col(Credential.id)).where(col(Credential.student_id).in_(ids))).scalars().all()
            credentials += _delete_credentials(session, credential_ids)
            for model in (Application, ChatLink, BindingCode, TermsAcceptance):
                session.execute(sa.delete(model).where(col(model.student_id).in_(ids)))  # type: ignore[attr-defined]
            # A ticket outlives the register row until its own period: it only loses the link.
            session.execute(sa.update(SupportThread).where(col(SupportThread.student_id).in_(ids))
                            .values(student_id=None))
            students += session.execute(sa.delete(Student).where(col(Student.id).in_(ids))).rowcount or 0
    cutoff = now - timedelta(days=retention_settings.ended_credentials_days)
    while True:
        with unit_of_work(ctx.engine) as session:
            ids = session.execute(
                sa.select(col(Credential.id))
                .where(col(Credential.state).not_in(list(LIVE_STATES)))
                .where(sa.func.coalesce(col(Credential.ended_at), col(Credential.updated_at)) < cutoff)
                .limit(batch)
            ).scalars().all()
            if not ids:
                break
            credentials += _delete_credentials(session, ids)
    return students, credentials
