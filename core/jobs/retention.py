"""Retention: closed support threads, idle conversations and mails of no thread older than
`jobs.retention_days` go.

The audit trail stays. Also cleared: wrong-guess records past any rate-limit window,
chat-binding codes that are used or expired, and webhook updates handled more than
core.update_store.HANDLED_KEEP ago (their payload, what the student typed, went when they were
handled; one not handled yet is work still to do and stays).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import col

from core.context import AppContext
from core.db import checkpoint_wal, unit_of_work
from core.jobs.ledger import JobResult
from core.models import (
    BindingCode,
    Conversation,
    GuessAttempt,
    InboundMail,
    StoredUpdate,
    SupportMessage,
    SupportThread,
    ThreadStatus,
)
from core.update_store import HANDLED_KEEP

__all__ = ["retention"]

# Kept a day past the longest rate-limit window, so a lock never lifts early.
_GUESS_KEEP = timedelta(days=1)


def retention(ctx: AppContext) -> JobResult:
    now = ctx.clock.now()
    cutoff = now - timedelta(days=ctx.settings.jobs.retention_days)
    batch = ctx.settings.jobs.batch_size
    result: JobResult = {"threads": 0, "support_messages": 0, "inbound_mails": 0, "conversations": 0}
    while True:
        with unit_of_work(ctx.engine) as session:
            ids: Sequence[int] = session.execute(
                sa.select(col(SupportThread.id))
                .where(SupportThread.status == ThreadStatus.CLOSED)
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
    while True:
        with unit_of_work(ctx.engine) as session:
            ids = session.execute(
                sa.select(col(Conversation.id)).where(col(Conversation.updated_at) < cutoff).limit(batch)
            ).scalars().all()
            if not ids:
                break
            result["conversations"] += session.execute(
                sa.delete(Conversation).where(col(Conversation.id).in_(ids))
            ).rowcount
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
