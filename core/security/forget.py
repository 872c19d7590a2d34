"""`/forget`: a chat account unlinked from the student everywhere the service keeps it.

Deleted: the account's link to the student, its conversation state and chat codes. Kept for
the audit, but under a pseudonym (`telegram:forgotten-1f3a...`, random, so nothing leads back
to the account): the audit trail's rows the account made (`chat.bound`, wrong guesses,
tickets opened), its terms acceptances, its support threads (the texts in them replaced, the
open ones closed) and the outbox rows already sent or failed for it (their body and error
cleared). Not touched: the register, credentials (the student's, not the account's), and the
wrong-guess counts (forgetting must not reset a lock; they go with the guess window).
Messages still on their way to the chat (the "forgotten" confirmation among them) are sent,
and go with the outbox's retention.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.storage import audit
from core.storage.models import (
    AuditEvent,
    BindingCode,
    ChatLink,
    Conversation,
    OutboxMessage,
    OutboxStatus,
    SupportMessage,
    SupportThread,
    TermsAcceptance,
    ThreadStatus,
)

__all__ = ["REMOVED_TEXT", "forget_account"]

# What staff read in place of a forgotten chat's ticket texts (`mleg threads show`).
REMOVED_TEXT = "[removed: the student unlinked this chat with /forget]"


def forget_account(session: Session, *, channel: str, account_id: str, now: datetime) -> str:
    """Unlink `channel:account_id` everywhere; returns the pseudonym it has in what stays."""
    pseudonym = f"forgotten-{uuid.uuid4().hex[:16]}"
    actor, new_actor = f"{channel}:{account_id}", f"{channel}:{pseudonym}"
    for model in (ChatLink, BindingCode, Conversation):
        session.execute(sa.delete(model).where(
            model.channel == channel, model.account_id == account_id))  # type: ignore[attr-defined]
    session.execute(sa.update(TermsAcceptance).where(
        col(TermsAcceptance.channel) == channel, col(TermsAcceptance.account_id) == account_id,
    ).values(account_id=pseudonym))
    session.execute(sa.update(AuditEvent).where(col(AuditEvent.actor) == actor).values(actor=new_actor))
    _forget_threads(session, channel, account_id, pseudonym, now)
    # Done with: the chat id goes, and with it the error that may quote the chat, and a held
    # answer's body (it would have gone out when the student came back: they will not).
    done = session.exec(select(OutboxMessage).where(
        OutboxMessage.channel == channel, OutboxMessage.recipient == account_id,
        col(OutboxMessage.status).in_([OutboxStatus.SENT, OutboxStatus.FAILED, OutboxStatus.CANCELLED]),
    )).all()
    for row in done:
        # The key may name the chat too (`reply:telegram:42:...`); unique still by the row's id.
        row.recipient, row.last_error, row.body = pseudonym, None, None
        row.idempotency_key = f"forgotten:{row.id}:{pseudonym}"
        session.add(row)
    audit.record(session, at=now, actor=new_actor, action="chat.forgotten")
    return pseudonym


def _forget_threads(session: Session, channel: str, account_id: str, pseudonym: str, now: datetime) -> None:
    threads = session.exec(select(SupportThread).where(
        SupportThread.channel == channel, SupportThread.account_id == account_id)).all()
    for thread in threads:
        session.execute(sa.update(SupportMessage).where(col(SupportMessage.thread_id) == thread.id)
                        .values(body=REMOVED_TEXT))
        session.execute(sa.update(SupportMessage).where(
            col(SupportMessage.thread_id) == thread.id, col(SupportMessage.author) == account_id,
        ).values(author=pseudonym))
        thread.account_id, thread.subject = pseudonym, ""
        if thread.status != ThreadStatus.CLOSED:
            # Nobody to answer any more: an open ticket would wait for staff for nothing.
            thread.status, thread.closed_at = ThreadStatus.CLOSED, now
            audit.record(session, at=now, actor=f"{channel}:{pseudonym}", action="thread.closed",
                         thread_id=thread.id, student_id=thread.student_id, reason="forgotten")
        thread.updated_at = now
        session.add(thread)
