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
    ChatLink,
    OutboxMessage,
    OutboxStatus,
    Student,
    SupportMessage,
    SupportThread,
    ThreadStatus,
)
from core.support.mail_sender import address_key, domain_of

__all__ = [
    "ANSWER_KIND",
    "EMAIL_CHANNEL",
    "HELD_NOTE",
    "NOTE_DIRECTION",
    "STAFF_CHANNEL",
    "ThreadClaimed",
    "add_message",
    "add_note",
    "answer_undelivered",
    "claim_thread",
    "close_thread",
    "email_message_id",
    "escalate_thread",
    "get_thread",
    "list_threads",
    "open_thread",
    "reply_subject",
    "resend_held_answers",
    "same_sender",
    "staff_reply",
    "thread_history",
    "thread_messages",
    "thread_tag",
]

STAFF_CHANNEL = "staff"
# SupportMessage.direction of staff's internal notes ("in": the student's, "out": to the student).
NOTE_DIRECTION = "note"
EMAIL_CHANNEL = "email"
ANSWER_KIND = "support-answer"
PREVIEW = 1500
# Written into a refused answer's outbox error: staff read it in `mleg threads show`, and the
# chat sender looks for it to know that a delivery to that chat means the student is back.
HELD_NOTE = "held until the student returns"
# The outbox key of a staff answer (see staff_reply) and of its resends: "staff-reply:<message id>@<time>...".
_ANSWER_KEY = re.compile(r"^(staff-reply:(\d+)@[0-9T]+)")


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


def _staff_room_configured(ctx: AppContext) -> bool:
    return ctx.settings.telegram.staff_chat_id is not None and bool(ctx.settings.telegram.token)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def same_sender(column: Any, address: str) -> sa.ColumnElement[bool]:
    """SQL: `column` holds `address` or a `+tag` variant of it, in any case (core.support.mail_sender.address_key)."""
    key = address_key(address)
    local, _, domain = key.rpartition("@")
    lowered = sa.func.lower(column)
    return sa.or_(lowered == key,
                  lowered.like(f"{_like_escape(local)}+%@{_like_escape(domain)}", escape="\\"))


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
        sa.func.lower(col(SupportThread.account_id)).like(f"%@{_like_escape(domain)}", escape="\\")]
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
        session, ctx.box, key=f"{_row_key('staff', thread.id, thread.created_at)}:{key_suffix}",
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


def _staff_note(ctx: AppContext, session: Session, thread: SupportThread, key: str, now: datetime,
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
    session.add(SupportMessage(thread_id=thread.id or 0, direction="in", author=author or account_id,
                               body=text, email_message_id=email_message_id, created_at=now,
                               sender_verified=sender_verified))
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
    sender_verified: bool | None = None,
) -> SupportMessage:
    """A follow-up from the student: the thread is open to staff again."""
    if direction == "in":
        text = redact_personal(text)
    now = ctx.clock.now()
    message = SupportMessage(thread_id=thread.id or 0, direction=direction, author=author, body=text,
                             email_message_id=email_message_id, created_at=now, sender_verified=sender_verified)
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
        kind=ANSWER_KIND, message=outgoing, now=now, language=language,
        student_id=thread.student_id, thread_id=thread.id,
    )
    thread.status = ThreadStatus.ANSWERED
    thread.updated_at = now
    session.add(thread)
    audit.record(session, at=now, actor=f"staff:{staff}", action="thread.answered",
                 thread_id=thread.id, student_id=thread.student_id)
    return message


# --- answers the student's chat refused ---------------------------------------------------------

def _answer_of(session: Session, row: OutboxMessage) -> tuple[str, SupportThread, SupportMessage] | None:
    """(the answer's base key, its thread, the staff message) of an answer's outbox row; None for
    any other row, or when retention already deleted the thread."""
    match = _ANSWER_KEY.match(row.idempotency_key)
    if row.kind != ANSWER_KIND or row.thread_id is None or match is None:
        return None
    thread = session.get(SupportThread, row.thread_id)
    message = session.get(SupportMessage, int(match.group(2)))
    if thread is None or message is None or message.direction != "out":
        return None
    return match.group(1), thread, message


def _reachable_student(session: Session, thread: SupportThread) -> Student | None:
    """The student a chat thread belongs to: known when the thread was opened, or bound since.

    A chat account is bound only after the code e-mailed to the student's university address,
    so the register's address is the student's own.
    """
    student_id = thread.student_id
    if student_id is None:
        student_id = session.exec(select(ChatLink.student_id).where(
            ChatLink.channel == thread.channel, ChatLink.account_id == thread.account_id)).first()
    return session.get(Student, student_id) if student_id is not None else None


def answer_undelivered(ctx: AppContext, session: Session, row: OutboxMessage, *, reason: str) -> str | None:
    """A staff answer the student's chat refused for good (they blocked the bot): what now.

    The student asked and waits for the answer, and may never unblock the bot, so when we know
    who they are it goes at once to their university e-mail from the register (with the ticket
    tag in the subject). A chat nobody is bound to has no address: the answer is held and sent
    when the student comes back to the chat (resend_held_answers). Either way staff are told in
    the staff room and the thread's history records it. Returns what to add to the row's error
    (shown to staff by `mleg threads show`), None when the row is no staff answer.
    """
    found = _answer_of(session, row)
    if found is None:
        return None
    base, thread, message = found
    now = ctx.clock.now()
    student = _reachable_student(session, thread)
    language = thread.language
    if student is not None and student.email:
        subject = reply_subject(thread.subject or ctx.catalog.text(language, "support.email_subject"),
                                thread.id or 0)
        text = ctx.catalog.text(language, "support.staff_answer_email", thread=thread.id, text=message.body)
        # One e-mail per answer, whichever of its chat attempts was refused.
        mail = outbox.enqueue(
            session, ctx.box, key=f"{base}:email", channel=EMAIL_CHANNEL, recipient=student.email,
            kind=ANSWER_KIND, message=OutgoingMessage(text=text, subject=subject), now=now, language=language,
            student_id=student.id, thread_id=thread.id,
        )
        fallback, note, annotation = "email", "answer_emailed", f"answer e-mailed instead (outbox #{mail.id})"
    else:
        fallback, note, annotation = "held", "answer_held", HELD_NOTE
    audit.record(session, at=now, actor=f"{row.channel}:{row.recipient}", action="thread.answer_undelivered",
                 thread_id=thread.id, student_id=thread.student_id, outbox=row.id, fallback=fallback)
    _staff_note(ctx, session, thread, note, now, f"undelivered{row.id}", reason=reason)
    return annotation


def resend_held_answers(ctx: AppContext, session: Session, *, channel: str, account_id: str) -> list[OutboxMessage]:
    """The student is back in the chat (unblocked the bot, or wrote again): answers held since
    their chat refused them are queued anew, oldest first, and staff are told.

    Idempotent: each held row gets one resend (keyed by the row), and its error then names the
    resend, so it is held no longer. A resend refused again is held in its turn.
    """
    # Locked: the front-end (an unblock) and the sender (a delivery) may both see the return at once.
    lock_for_write(session)
    held = session.exec(select(OutboxMessage).where(
        OutboxMessage.channel == channel, OutboxMessage.recipient == account_id,
        OutboxMessage.kind == ANSWER_KIND, OutboxMessage.status == OutboxStatus.FAILED,
        col(OutboxMessage.last_error).contains(HELD_NOTE),
    ).order_by(col(OutboxMessage.id)).with_for_update()).all()
    now = ctx.clock.now()
    queued: list[OutboxMessage] = []
    for row in held:
        found = _answer_of(session, row)
        if found is None:
            continue
        base, thread, message = found
        text = ctx.catalog.text(thread.language, "support.staff_answer", thread=thread.id, text=message.body)
        again = outbox.enqueue(
            session, ctx.box, key=f"{base}:again{row.id}", channel=channel, recipient=account_id,
            kind=ANSWER_KIND, message=OutgoingMessage(text=text), now=now, language=thread.language,
            student_id=thread.student_id, thread_id=thread.id,
        )
        row.last_error = (row.last_error or "").replace(HELD_NOTE, f"re-sent as outbox #{again.id} when the "
                                                                  "student came back")
        session.add(row)
        audit.record(session, at=now, actor=f"{channel}:{account_id}", action="thread.answer_resent",
                     thread_id=thread.id, student_id=thread.student_id, outbox=again.id, instead_of=row.id)
        _staff_note(ctx, session, thread, "answer_resent", now, f"resent{row.id}")
        queued.append(again)
    return queued
