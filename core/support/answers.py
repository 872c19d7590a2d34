"""Staff answers to support threads: queued to the student on the channel they used, and what
happens when the student's chat refuses one (blocked bot, deleted account): e-mailed to the register
address, or held until the student comes back to the chat.
"""

from __future__ import annotations

import re

from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.app.errors import ConflictError
from core.messaging import outbox
from core.messaging.outgoing import OutgoingMessage
from core.storage import audit
from core.storage.db import lock_for_write
from core.storage.models import (
    ChatLink,
    OutboxMessage,
    OutboxStatus,
    Student,
    SupportMessage,
    SupportThread,
    ThreadStatus,
)
from core.support.threads import (
    EMAIL_CHANNEL,
    email_message_id,
    get_thread,
    reply_subject,
    row_key,
    staff_note,
    thread_messages,
)

__all__ = ["ANSWER_KIND", "HELD_NOTE", "answer_undelivered", "resend_held_answers", "staff_reply"]

ANSWER_KIND = "support-answer"
# Written into a refused answer's outbox error: staff read it in `mleg threads show`, and the
# chat sender looks for it to know that a delivery to that chat means the student is back.
HELD_NOTE = "held until the student returns"
_ANSWER_KEY = re.compile(r"^(staff-reply:(\d+)@[0-9T]+)")


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
    key = row_key("staff-reply", message.id, message.created_at)
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
    staff_note(ctx, session, thread, note, now, f"undelivered{row.id}", reason=reason)
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
        staff_note(ctx, session, thread, "answer_resent", now, f"resent{row.id}")
        queued.append(again)
    return queued
