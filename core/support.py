"""Support threads (zgłoszenia): opened by the chat or the mailbox, escalated to staff, answered back.

A staff answer goes back through the channel the student used: the chat account that
asked, or an e-mail threaded onto the student's message.
"""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import audit, outbox
from core.context import AppContext
from core.errors import ConflictError, NotFoundError
from core.models import Student, SupportMessage, SupportThread, ThreadStatus
from core.outgoing import Button, OutgoingMessage
from core.redact import redact_personal
from core.secrets_box import SecretBox

__all__ = [
    "STAFF_CHANNEL",
    "add_message",
    "claim_thread",
    "close_thread",
    "email_message_id",
    "escalate_thread",
    "get_thread",
    "list_threads",
    "open_thread",
    "reply_subject",
    "staff_reply",
    "thread_messages",
    "thread_tag",
]

STAFF_CHANNEL = "staff"
PREVIEW = 1500


def email_message_id(box: SecretBox, key: str, domain: str) -> str:
    """A stable Message-ID for an outbox key: a resend after a crash carries the same one.

    Core knows it before the mail is sent, so a student's reply to it threads onto the ticket.
    Keyed with the installation's secret: a plain hash of the key gave a staging and a
    production system (or a database started afresh) the same Message-ID for different mails,
    and mail clients drop what looks like a duplicate.
    """
    return f"<{box.keyed_hash('message-id', key)[:32]}.mleg@{domain}>"


def _row_key(prefix: str, row_id: int | None, created_at: datetime) -> str:
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


def _notify_staff(ctx: AppContext, session: Session, thread: SupportThread, text: str, now: datetime,
                  key_suffix: str) -> None:
    """A message into the staff room, if one is configured; the CLI always lists threads."""
    if ctx.settings.telegram.staff_chat_id is None or not ctx.settings.telegram.token:
        return
    body = ctx.catalog.text(
        "pl", "staff.escalation", thread=thread.id, student=_student_label(session, thread.student_id),
        channel=thread.channel, subject=thread.subject or "-", text=text[:PREVIEW],
    )
    outbox.enqueue(
        session, ctx.box, key=f"{_row_key('staff', thread.id, thread.created_at)}:{key_suffix}",
        channel=STAFF_CHANNEL,
        recipient=str(ctx.settings.telegram.staff_chat_id), kind="escalation",
        message=OutgoingMessage(text=body, buttons=[[Button("/claim", f"staff:claim:{thread.id}"),
                                                     Button("/close", f"staff:close:{thread.id}")]]),
        now=now, thread_id=thread.id, student_id=thread.student_id,
    )


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
        last_email_message_id=email_message_id,
    )
    session.add(thread)
    session.flush()
    session.add(SupportMessage(thread_id=thread.id or 0, direction="in", author=author or account_id,
                               body=text, email_message_id=email_message_id, created_at=now))
    audit.record(session, at=now, actor=f"{channel}:{account_id}" if channel != "email" else "email",
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
) -> SupportMessage:
    """A follow-up from the student: the thread is open to staff again."""
    if direction == "in":
        text = redact_personal(text)
    now = ctx.clock.now()
    message = SupportMessage(thread_id=thread.id or 0, direction=direction, author=author, body=text,
                             email_message_id=email_message_id, created_at=now)
    session.add(message)
    session.flush()
    thread.updated_at = now
    if direction == "in":
        if email_message_id:
            thread.last_email_message_id = email_message_id
        if thread.status in (ThreadStatus.ANSWERED, ThreadStatus.CLOSED, ThreadStatus.OPEN):
            thread.status = ThreadStatus.ESCALATED
            thread.closed_at = None
        _notify_staff(ctx, session, thread, text, now, f"msg{message.id}")
    session.add(thread)
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


def claim_thread(ctx: AppContext, session: Session, thread_id: int, *, staff: str) -> SupportThread:
    thread = get_thread(session, thread_id)
    if thread.status == ThreadStatus.CLOSED:
        raise ConflictError(f"thread {thread_id} is closed")
    thread.claimed_by = staff
    thread.status = ThreadStatus.CLAIMED
    thread.updated_at = ctx.clock.now()
    session.add(thread)
    audit.record(session, at=ctx.clock.now(), actor=f"staff:{staff}", action="thread.claimed",
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


def staff_reply(ctx: AppContext, session: Session, thread_id: int, *, text: str, staff: str) -> SupportMessage:
    """Record a staff answer and queue it to the student on the channel the student used."""
    thread = get_thread(session, thread_id)
    if thread.status == ThreadStatus.CLOSED:
        raise ConflictError(f"thread {thread_id} is closed; reopen it by a new message from the student")
    now = ctx.clock.now()
    message = SupportMessage(thread_id=thread.id or 0, direction="out", author=f"staff:{staff}", body=text,
                             created_at=now)
    session.add(message)
    session.flush()
    key = _row_key("staff-reply", message.id, message.created_at)
    language = thread.language
    if thread.channel == "email":
        subject = reply_subject(thread.subject or ctx.catalog.text(language, "support.email_subject"),
                                thread.id or 0)
        references = [m.email_message_id for m in thread_messages(session, thread.id or 0)
                      if m.email_message_id and m.id != message.id]
        # Recorded on the message, so the student's reply to this answer threads onto the ticket.
        message.email_message_id = email_message_id(ctx.box, key, ctx.settings.university.message_id_domain)
        session.add(message)
        outgoing = OutgoingMessage(
            text=text, subject=subject, in_reply_to=thread.last_email_message_id, references=references[-10:],
            message_id=message.email_message_id,
        )
    else:
        outgoing = OutgoingMessage(text=ctx.catalog.text(language, "support.staff_answer", thread=thread.id,
                                                         text=text))
    outbox.enqueue(
        session, ctx.box, key=key, channel=thread.channel, recipient=thread.account_id,
        kind="support-answer", message=outgoing, now=now, language=language,
        student_id=thread.student_id, thread_id=thread.id,
    )
    thread.status = ThreadStatus.ANSWERED
    thread.updated_at = now
    session.add(thread)
    audit.record(session, at=now, actor=f"staff:{staff}", action="thread.answered",
                 thread_id=thread.id, student_id=thread.student_id)
    return message
