"""Support threads (zgłoszenia): opened by the chat or the mailbox, escalated to staff, answered back.

A staff answer goes back through the channel the student used: the chat account that
asked, or an e-mail threaded onto the student's message.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.app.errors import ConflictError, NotFoundError
from core.messaging import outbox
from core.messaging.outgoing import Button, OutgoingMessage
from core.security.redact import redact_personal
from core.security.secrets_box import SecretBox
from core.storage import audit
from core.storage.db import lock_for_write
from core.storage.models import (
    AuditEvent,
    OutboxMessage,
    Student,
    SupportMessage,
    SupportThread,
    ThreadStatus,
)
from core.support.mail_sender import address_key, domain_of

__all__ = [
    "EMAIL_CHANNEL",
    "NOTE_DIRECTION",
    "STAFF_CHANNEL",
    "ThreadClaimed",
    "add_message",
    "add_note",
    "claim_thread",
    "close_thread",
    "email_message_id",
    "escalate_thread",
    "get_thread",
    "like_escape",
    "list_threads",
    "open_thread",
    "reply_subject",
    "row_key",
    "same_sender",
    "staff_note",
    "thread_history",
    "thread_messages",
    "thread_tag",
]

STAFF_CHANNEL = "staff"
# SupportMessage.direction of staff's internal notes ("in": the student's, "out": to the student).
NOTE_DIRECTION = "note"
EMAIL_CHANNEL = "email"
PREVIEW = 1500
# The outbox key of a staff answer (see staff_reply) and of its resends: "staff-reply:<message id>@<time>...".


class ThreadClaimed(ConflictError):
    """The thread is held by another staff member: a take-over must be asked for (`force`)."""

    def __init__(self, thread_id: int, holder: str) -> None:
        self.thread_id = thread_id
        self.holder = holder
        super().__init__(f"thread {thread_id} is already claimed by {holder}")


def email_message_id(box: SecretBox, key: str, domain: str) -> str:
    """A stable Message-ID for an outbox key: a resend after a crash carries the same one.

    Core knows it before the mail is sent, so a student's reply to it threads onto the ticket.
    Keyed with the installation's secret: a plain hash of the key gave a staging and a
    production system (or a database started afresh) the same Message-ID for different mails,
    and mail clients drop what looks like a duplicate.
    """
    return f"<{box.keyed_hash('message-id', key)[:32]}.mleg@{domain}>"


def row_key(prefix: str, row_id: int | None, created_at: datetime) -> str:
    """An outbox key for a row: its id and creation time.

    The id alone is not unique for all time: retention deletes old threads and their messages,
    SQLite may then hand the same id out again, and outbox keys (and the Message-IDs made from
    them) stay; a repeated key is silently not queued.
    """
    return f"{prefix}:{row_id}@{created_at:%Y%m%dT%H%M%S%f}"


def thread_tag(thread_id: int) -> str:
    """The tag in e-mail subjects that threads a reply even when its headers are lost."""
    return f"[MLEG-{thread_id}]"


_ANY_TAG = re.compile(r"\s*\[MLEG-\d+\]", re.IGNORECASE)


def reply_subject(subject: str, thread_id: int) -> str:
    """The subject of our mail in a thread: `Re: <subject> [MLEG-n]`, with exactly one tag, ours.

    Tags of other threads (a student replying to a friend's forwarded answer, an old ticket)
    are dropped: kept, they piled up with every reply. Masked, as the subject may carry a PESEL.
    """
    subject = " ".join(_ANY_TAG.sub("", redact_personal(subject)).split())
    if not subject.lower().startswith("re:"):
        subject = f"Re: {subject}".strip()
    return f"{subject} {thread_tag(thread_id)}"


def _student_label(session: Session, student_id: int | None) -> str:
    student = session.get(Student, student_id) if student_id else None
    if student is None:
        return "?"
    return f"{student.first_name} {student.last_name} (album {student.album})"


def _staff_room_configured(ctx: AppContext) -> bool:
    return ctx.settings.telegram.staff_chat_id is not None and bool(ctx.settings.telegram.token)


def like_escape(text: str) -> str:
    """`text` as a LIKE pattern's literal part, with `\\` as the escape character."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def same_sender(column: Any, address: str) -> sa.ColumnElement[bool]:
    """SQL: `column` holds `address` or a `+tag` variant of it, in any case (core.support.mail_sender.address_key)."""
    key = address_key(address)
    local, _, domain = key.rpartition("@")
    lowered = sa.func.lower(column)
    return sa.or_(lowered == key,
                  lowered.like(f"{like_escape(local)}+%@{like_escape(domain)}", escape="\\"))


def _escalations_today(session: Session, now: datetime, *conditions: sa.ColumnElement[bool]) -> int:
    """Escalations of e-mail threads posted to the staff room in the last 24 hours, matching `conditions`."""
    return int(session.exec(
        select(sa.func.count()).select_from(OutboxMessage)
        .join(SupportThread, col(OutboxMessage.thread_id) == col(SupportThread.id))
        .where(OutboxMessage.channel == STAFF_CHANNEL, OutboxMessage.kind == "escalation",
               col(OutboxMessage.created_at) >= now - timedelta(days=1),
               SupportThread.channel == EMAIL_CHANNEL, *conditions)
    ).one())


def _escalation_cap(ctx: AppContext, session: Session, thread: SupportThread, now: datetime) -> str | None:
    """Why this e-mail thread's escalation must not be posted now, or None.

    A flood of mail (a thousand spam mails, or one address with a thousand `+tag` variants)
    would bury real escalations and make a forum topic each; the excess waits in
    `mleg threads list` instead. Proven senders of the university's own domains are not
    counted against their domain: a flood forged in their name must not hold them back.
    """
    if thread.channel != EMAIL_CHANNEL or not thread.account_id:
        return None
    limits = ctx.settings.imap
    key = address_key(thread.account_id)
    if limits.escalations_per_sender_per_day and _escalations_today(
            session, now, same_sender(col(SupportThread.account_id), key)) >= limits.escalations_per_sender_per_day:
        return f"sender cap: {limits.escalations_per_sender_per_day} escalations from {key} in 24 h"
    domain = domain_of(key)
    own = domain in ctx.settings.university.email_domains
    if not limits.escalations_per_domain_per_day or (own and thread.sender_verified):
        return None
    conditions: list[sa.ColumnElement[bool]] = [
        sa.func.lower(col(SupportThread.account_id)).like(f"%@{like_escape(domain)}", escape="\\")]
    if own:
        conditions.append(sa.or_(col(SupportThread.sender_verified).is_(None),
                                 col(SupportThread.sender_verified).is_(False)))
    if _escalations_today(session, now, *conditions) >= limits.escalations_per_domain_per_day:
        return f"domain cap: {limits.escalations_per_domain_per_day} escalations from @{domain} in 24 h"
    return None


def _post_to_staff(ctx: AppContext, session: Session, thread: SupportThread, message: OutgoingMessage,
                   now: datetime, key_suffix: str, kind: str) -> None:
    """A message into the staff room, if one is configured; the CLI always lists threads."""
    if not _staff_room_configured(ctx):
        return
    outbox.enqueue(
        session, ctx.box, key=f"{row_key('staff', thread.id, thread.created_at)}:{key_suffix}",
        channel=STAFF_CHANNEL, recipient=str(ctx.settings.telegram.staff_chat_id), kind=kind,
        message=message, now=now, thread_id=thread.id, student_id=thread.student_id,
    )


def _notify_staff(ctx: AppContext, session: Session, thread: SupportThread, text: str, now: datetime,
                  key_suffix: str) -> None:
    if _staff_room_configured(ctx):
        held = _escalation_cap(ctx, session, thread, now)
        if held is not None:
            if thread.escalation_held is None:
                audit.record(session, at=now, actor="email", action="thread.escalation_held",
                             student_id=thread.student_id, thread_id=thread.id, reason=held.partition(":")[0])
            thread.escalation_held = held[:120]
            session.add(thread)
            # One word to the staff room a day that something waits elsewhere (not one per mail:
            # that would be the flood again). A repeated outbox key is not queued twice.
            text = ctx.catalog.text(ctx.settings.default_language, "staff.escalations_held", reason=held)
            outbox.enqueue(session, ctx.box, key=f"staff-held:{now:%Y-%m-%d}", channel=STAFF_CHANNEL,
                           recipient=str(ctx.settings.telegram.staff_chat_id), kind="staff-note",
                           message=OutgoingMessage(text=text), now=now)
            return
        thread.escalation_held = None
        session.add(thread)
    if thread.sender_verified is False:
        # Staff must not act on it (a revocation, a changed address) as if the student wrote it.
        text = ctx.catalog.text(ctx.settings.default_language, "staff.unverified_sender",
                                address=thread.account_id) + "\n\n" + text
    body = ctx.catalog.text(
        ctx.settings.default_language, "staff.escalation", thread=thread.id,
        student=_student_label(session, thread.student_id), channel=thread.channel,
        subject=thread.subject or "-", text=text[:PREVIEW],
    )
    message = OutgoingMessage(text=body, buttons=[[Button("/claim", f"staff:claim:{thread.id}"),
                                                   Button("/close", f"staff:close:{thread.id}")]])
    _post_to_staff(ctx, session, thread, message, now, key_suffix, "escalation")


def staff_note(ctx: AppContext, session: Session, thread: SupportThread, key: str, now: datetime,
                key_suffix: str, **params: object) -> None:
    text = ctx.catalog.text(ctx.settings.default_language, f"staff.{key}", thread=thread.id, **params)
    _post_to_staff(ctx, session, thread, OutgoingMessage(text=text), now, key_suffix, "staff-note")


def open_thread(
    ctx: AppContext,
    session: Session,
    *,
    student_id: int | None,
    channel: str,
    account_id: str,
    text: str,
    language: str,
    subject: str = "",
    email_message_id: str | None = None,
    author: str | None = None,
    escalate: bool = True,
    sender_verified: bool | None = None,
) -> SupportThread:
    """A new thread with the student's text as its first message, escalated to staff unless told not to.

    `escalate=False` is for a question answered automatically (the mailbox's FAQ answers): the
    thread exists so that a reply to the answer reaches staff, but nobody is paged for it.
    Students type their PESEL and codes into questions: masked here, for every channel, before
    the text is stored or posted to the staff room.
    """
    text, subject = redact_personal(text), redact_personal(subject)
    now = ctx.clock.now()
    thread = SupportThread(
        student_id=student_id, channel=channel, account_id=account_id, subject=subject[:255],
        language=language, status=ThreadStatus.ESCALATED if escalate else ThreadStatus.ANSWERED,
        created_at=now, updated_at=now,
        last_email_message_id=email_message_id, sender_verified=sender_verified,
    )
    session.add(thread)
    session.flush()
    _insert_message(session, thread_id=thread.id or 0, direction="in", author=author or account_id, body=text,
                    email_message_id=email_message_id, created_at=now, sender_verified=sender_verified)
    audit.insert(session, at=now, actor=f"{channel}:{account_id}" if channel != "email" else "email",
                 action="thread.escalated" if escalate else "thread.auto_answered",
                 student_id=student_id, thread_id=thread.id)
    if escalate:
        _notify_staff(ctx, session, thread, text, now, "opened")
    return thread


def escalate_thread(ctx: AppContext, session: Session, thread: SupportThread, *, text: str, key: str) -> None:
    """Hand an (automatically answered) thread to staff after all."""
    text = redact_personal(text)
    now = ctx.clock.now()
    thread.status = ThreadStatus.ESCALATED
    thread.updated_at = now
    session.add(thread)
    audit.record(session, at=now, actor="email", action="thread.escalated", student_id=thread.student_id,
                 thread_id=thread.id)
    _notify_staff(ctx, session, thread, text, now, key)


def add_message(
    ctx: AppContext,
    session: Session,
    thread: SupportThread,
    *,
    text: str,
    author: str,
    direction: str = "in",
    email_message_id: str | None = None,
    sender_verified: bool | None = None,
) -> int:
    """A follow-up from the student: the thread is open to staff again. Returns the message's id."""
    if direction == "in":
        text = redact_personal(text)
    now = ctx.clock.now()
    if thread.id is None:
        session.flush()
    message_id = _insert_message(session, thread_id=thread.id or 0, direction=direction, author=author, body=text,
                                 email_message_id=email_message_id, created_at=now, sender_verified=sender_verified)
    thread.updated_at = now
    if direction == "in":
        if email_message_id:
            thread.last_email_message_id = email_message_id
        if thread.status in (ThreadStatus.ANSWERED, ThreadStatus.CLOSED, ThreadStatus.OPEN):
            thread.status = ThreadStatus.ESCALATED
            thread.closed_at = None
        _notify_staff(ctx, session, thread, text, now, f"msg{message_id}")
    session.add(thread)
    return message_id


_MESSAGES = SupportMessage.__table__  # type: ignore[attr-defined]
_INSERT_MESSAGE = sa.insert(_MESSAGES).returning(_MESSAGES.c.id)


def _insert_message(session: Session, *, thread_id: int, direction: str, author: str, body: str,
                    email_message_id: str | None, created_at: datetime, sender_verified: bool | None) -> int:
    """A thread's message, inserted now on the session's connection (its thread is in the database
    already): an ORM object and its flush cost the mailbox more than the rest of storing a mail."""
    return int(session.connection().execute(_INSERT_MESSAGE, {
        "thread_id": thread_id, "direction": direction, "author": author, "body": body,
        "email_message_id": email_message_id, "created_at": created_at, "sender_verified": sender_verified,
    }).scalar_one())


def add_note(ctx: AppContext, session: Session, thread_id: int, *, text: str, staff: str) -> SupportMessage:
    """An internal note of staff on the thread (`/note` in the staff room): kept with the thread
    (`mleg threads show`), never sent to the student, and the thread's status stays as it is."""
    thread = get_thread(session, thread_id)
    now = ctx.clock.now()
    # Masked like a student's text: staff may paste what the student wrote.
    message = SupportMessage(thread_id=thread.id or 0, direction=NOTE_DIRECTION, author=f"staff:{staff}",
                             body=redact_personal(text), created_at=now)
    session.add(message)
    session.flush()
    audit.record(session, at=now, actor=f"staff:{staff}", action="thread.noted", thread_id=thread.id,
                 student_id=thread.student_id)
    return message


def get_thread(session: Session, thread_id: int) -> SupportThread:
    thread = session.get(SupportThread, thread_id)
    if thread is None:
        raise NotFoundError(f"no support thread {thread_id}")
    return thread


def thread_messages(session: Session, thread_id: int) -> list[SupportMessage]:
    return list(session.exec(
        select(SupportMessage).where(SupportMessage.thread_id == thread_id).order_by(col(SupportMessage.id))
    ).all())


def list_threads(session: Session, *, status: str | None = None, limit: int = 100) -> list[SupportThread]:
    query = select(SupportThread)
    if status == "open":
        query = query.where(SupportThread.status != ThreadStatus.CLOSED)
    elif status:
        query = query.where(SupportThread.status == status)
    return list(session.exec(query.order_by(sa.desc(col(SupportThread.updated_at))).limit(limit)).all())


def thread_history(session: Session, thread_id: int) -> list[AuditEvent]:
    """What was done to the thread and by whom (claims, take-overs, answers, refused deliveries)."""
    return list(session.exec(
        select(AuditEvent).where(AuditEvent.thread_id == thread_id).order_by(col(AuditEvent.id))
    ).all())


def claim_thread(ctx: AppContext, session: Session, thread_id: int, *, staff: str,
                 force: bool = False) -> SupportThread:
    """Take a thread. One a colleague holds is refused (ThreadClaimed, naming the holder) unless
    `force`: two people answering one student at cross purposes is worse than a question first.
    A take-over is audited as such, with the previous holder, so the thread's history shows it."""
    # Read and write under one lock: two staff pressing /claim at once must not both "win".
    lock_for_write(session)
    thread = session.exec(
        select(SupportThread).where(SupportThread.id == thread_id).with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if thread is None:
        raise NotFoundError(f"no support thread {thread_id}")
    if thread.status == ThreadStatus.CLOSED:
        raise ConflictError(f"thread {thread_id} is closed")
    previous = thread.claimed_by
    taking_over = previous is not None and previous != staff
    if taking_over and not force:
        raise ThreadClaimed(thread_id, previous or "")
    now = ctx.clock.now()
    thread.claimed_by = staff
    thread.status = ThreadStatus.CLAIMED
    thread.updated_at = now
    session.add(thread)
    if taking_over:
        audit.record(session, at=now, actor=f"staff:{staff}", action="thread.taken_over",
                     thread_id=thread.id, student_id=thread.student_id, previous=previous)
    else:
        audit.record(session, at=now, actor=f"staff:{staff}", action="thread.claimed",
                     thread_id=thread.id, student_id=thread.student_id)
    return thread


def close_thread(ctx: AppContext, session: Session, thread_id: int, *, staff: str) -> SupportThread:
    thread = get_thread(session, thread_id)
    if thread.status == ThreadStatus.CLOSED:
        # Said so, not "closed" again with a second audit entry.
        raise ConflictError(f"thread {thread_id} is already closed")
    now = ctx.clock.now()
    thread.status = ThreadStatus.CLOSED
    thread.closed_at = now
    thread.updated_at = now
    session.add(thread)
    audit.record(session, at=now, actor=f"staff:{staff}", action="thread.closed",
                 thread_id=thread.id, student_id=thread.student_id)
    return thread
