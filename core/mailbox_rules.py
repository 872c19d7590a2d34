"""Support-mailbox rules (skrzynka pomocy): what an incoming e-mail gets, decided in core.

mail/ reads the mailbox and parses MIME into `InboundFacts`; this module decides, inside the
caller's unit of work: ignore automatic mail (RFC 3834 and its real-world cousins), thread a
reply onto its ticket, answer a confident FAQ question in the sender's language (a personal
one only to the student's register address), cap automatic answers per sender and day, and
escalate everything else to staff. Every answer is an outbox row, so it is sent once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import outbox, support
from core.compose import format_date, format_datetime
from core.context import AppContext
from core.credentials import effective_valid_until, expire_overdue_activation, latest_credential
from core.faq import Faq, detect_language
from core.models import InboundMail, OutboxMessage, Student, SupportMessage, SupportThread
from core.outgoing import OutgoingMessage
from core.support import email_message_id, thread_tag

__all__ = [
    "AUTO_ANSWER_KINDS",
    "InboundFacts",
    "Outcome",
    "automatic_reason",
    "email_message_id",
    "find_thread",
    "handle_inbound",
]

CHANNEL = "email"
AUTO_ANSWER_KINDS = ("mail-answer", "mail-notice")
MAX_STORED_TEXT = 20_000
_TAG = re.compile(r"\[MLEG-(\d+)\]", re.IGNORECASE)
_NOREPLY = re.compile(r"^(no[-_.]?reply|do[-_.]?not[-_.]?reply|bounce[s]?)([-+_.].*)?$", re.IGNORECASE)
_BOUNCERS = {"mailer-daemon", "postmaster"}


@dataclass
class InboundFacts:
    """What the rules need from one e-mail, already decoded (mail/ fills it from MIME)."""

    sender: str  # addr-spec from From, lower case; "" when missing or unparsable
    subject: str = ""
    text: str = ""
    sender_name: str = ""
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    auto_submitted: str | None = None
    precedence: str | None = None
    list_headers: bool = False
    auto_response_suppress: str | None = None
    content_type: str = "text/plain"
    return_path: str | None = None  # None: no header; "": the null path `<>`
    size: int = 0
    oversize: bool = False
    attachments: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    """What happened to one e-mail: `status` goes onto the InboundMail row."""

    status: str  # processed | ignored
    reason: str
    thread_id: int | None = None
    answered: bool = False


def automatic_reason(facts: InboundFacts, own_addresses: set[str]) -> str | None:
    """Why this mail must never get an automatic answer, or None for a person's mail."""
    local = facts.sender.rsplit("@", 1)[0] if facts.sender else ""
    if not facts.sender:
        return "no sender address"
    if facts.sender in own_addresses:
        return "from our own address (loop)"
    # RFC 3834 5.2: anything but "no" means automatic.
    if facts.auto_submitted and facts.auto_submitted.strip().lower() != "no":
        return f"Auto-Submitted: {facts.auto_submitted.strip()[:40]}"
    if facts.precedence and facts.precedence.strip().lower() in ("bulk", "list", "junk"):
        return f"Precedence: {facts.precedence.strip()[:20]}"
    if facts.list_headers:
        return "mailing list (List-* headers)"
    if facts.auto_response_suppress:
        # Exchange puts it on its own automatic mail (out-of-office, recalls, receipts).
        return "X-Auto-Response-Suppress"
    if facts.content_type == "multipart/report":
        return "delivery report (multipart/report)"
    if facts.return_path == "":
        return "null Return-Path (a bounce)"
    if local in _BOUNCERS:
        return f"bounce ({local})"
    if _NOREPLY.match(local):
        return "noreply sender"
    return None


def find_thread(session: Session, facts: InboundFacts) -> SupportThread | None:
    """The ticket this mail continues: by In-Reply-To/References, else by the subject tag.

    The tag alone is trusted only from the thread's own address, so a forwarded mail or a
    guessed number never lands in someone else's ticket.
    """
    candidates = [facts.in_reply_to, *reversed(facts.references)]
    for message_id in [c for c in candidates if c]:
        found = session.exec(
            select(SupportMessage).where(SupportMessage.email_message_id == message_id)
        ).first()
        if found is not None:
            thread = session.get(SupportThread, found.thread_id)
            if thread is not None and thread.channel == CHANNEL:
                return thread
    match = _TAG.search(facts.subject)
    if match:
        thread = session.get(SupportThread, int(match.group(1)))
        if thread is not None and thread.channel == CHANNEL and thread.account_id == facts.sender:
            return thread
    return None


def _auto_answers_today(session: Session, sender: str, ctx: AppContext) -> int:
    since = ctx.clock.now() - timedelta(days=1)
    return int(session.exec(
        select(sa.func.count()).select_from(OutboxMessage).where(
            OutboxMessage.channel == CHANNEL,
            col(OutboxMessage.kind).in_(AUTO_ANSWER_KINDS),
            OutboxMessage.recipient == sender,
            col(OutboxMessage.created_at) >= since,
        )
    ).one())


def _question_text(facts: InboundFacts) -> str:
    """Subject and body without quoted lines: an old quoted answer must not decide the match."""
    lines = [line for line in facts.text.splitlines() if not line.lstrip().startswith(">")]
    return f"{facts.subject}\n" + "\n".join(lines)


def _status_text(ctx: AppContext, session: Session, student: Student, lang: str) -> str:
    """The personal answer: where the student's credential is (never the activation code)."""
    t = ctx.catalog.text
    lines = [t(lang, "status.hello", first_name=student.first_name)]
    # As in the chat: dead activation data is expired now, not after the nightly sweep.
    expire_overdue_activation(ctx, session, student.id or 0)
    credential = latest_credential(session, student.id or 0)
    if credential is None:
        lines.append(t(lang, "status.none"))
    elif credential.state == "pending_activation" and credential.activation_deadline:
        lines.append(t(lang, "status.pending_activation", email=student.email,
                       deadline=format_datetime(credential.activation_deadline),
                       valid_until=format_date(credential.valid_until)))
    elif credential.state == "active":
        ends = effective_valid_until(student, credential)
        lines.append(t(lang, "status.active", valid_until=format_date(ends)))
        if ends < credential.valid_until:
            lines.append(t(lang, "status.ends_on_removal", until=format_date(ends)))
    elif credential.state == "requested":
        lines.append(t(lang, "status.requested"))
    else:
        reason_key = f"end_reason.{credential.end_reason}"
        reason = t(lang, reason_key) if ctx.catalog.has(lang, reason_key) else (credential.end_reason or "-")
        lines.append(t(lang, f"status.{credential.state}", reason=reason))
    return "\n".join(lines)


class _Mailbox:
    """One e-mail's handling: the facts, the context, and the helpers that answer it."""

    def __init__(self, ctx: AppContext, session: Session, facts: InboundFacts, inbound_id: int) -> None:
        self.ctx = ctx
        self.session = session
        self.facts = facts
        self.inbound_id = inbound_id
        inbound = session.get(InboundMail, inbound_id)  # in the session already: no query
        if inbound is None:
            raise ValueError(f"inbound mail {inbound_id} is not stored")
        self.digest = inbound.digest
        self.lang = detect_language(_question_text(facts), ctx.settings.default_language)

    def body_for_staff(self) -> str:
        text = self.facts.text.strip()[:MAX_STORED_TEXT]
        notes = []
        if self.facts.oversize:
            notes.append(f"[over the size limit: {self.facts.size} bytes; attachments not downloaded]")
        if self.facts.attachments:
            notes.append("[attachments: " + ", ".join(self.facts.attachments[:20]) + "]")
        return "\n".join([text, *notes]).strip() or "(no text)"

    def answer(self, thread: SupportThread, key: str, body: str, *, recipient: str, kind: str) -> bool:
        """Queue an automatic answer (RFC 3834 auto-replied); False when the daily cap is reached."""
        ctx, facts = self.ctx, self.facts
        if _auto_answers_today(self.session, recipient, ctx) >= ctx.settings.imap.auto_replies_per_sender_per_day:
            return False
        tag = thread_tag(thread.id or 0)
        subject = facts.subject.strip() or ctx.catalog.text(self.lang, "support.email_subject")
        if tag not in subject:
            subject = f"{subject} {tag}"
        if not subject.lower().startswith("re:"):
            subject = f"Re: {subject}"
        footer = ctx.catalog.text(self.lang, "mail.footer", university=ctx.settings.university.name, tag=tag)
        text = f"{ctx.catalog.text(self.lang, 'mail.greeting')}\n\n{body}\n\n{footer}"
        # The mail's digest, not its row id: retention deletes old mail and SQLite may reuse
        # the id, and an outbox key seen before is silently not queued.
        outbox_key = f"mail-{key}:{self.digest}"
        message_id = email_message_id(ctx.box, outbox_key, ctx.settings.university.message_id_domain)
        outbox.enqueue(
            self.session, ctx.box, key=outbox_key, channel=CHANNEL, recipient=recipient, kind=kind,
            message=OutgoingMessage(
                text=text, subject=subject, auto_submitted="auto-replied", in_reply_to=facts.message_id,
                references=[*facts.references, *([facts.message_id] if facts.message_id else [])][-10:],
                message_id=message_id,
            ),
            now=ctx.clock.now(), language=self.lang, student_id=thread.student_id, thread_id=thread.id,
        )
        # Recorded with its Message-ID so that the student's reply to it finds this thread.
        support.add_message(ctx, self.session, thread, text=text, author="auto", direction="out",
                            email_message_id=message_id)
        return True

    def open(self, student: Student | None, *, escalate: bool) -> SupportThread:
        facts = self.facts
        return support.open_thread(
            self.ctx, self.session, student_id=student.id if student else None, channel=CHANNEL,
            account_id=facts.sender, text=self.body_for_staff(), language=self.lang,
            subject=facts.subject or "", email_message_id=facts.message_id,
            author=f"{facts.sender_name} <{facts.sender}>" if facts.sender_name else facts.sender,
            escalate=escalate,
        )


def handle_inbound(ctx: AppContext, session: Session, facts: InboundFacts, *, inbound_id: int,
                   faq: Faq) -> Outcome:
    """Decide and record what one stored e-mail gets; the caller commits."""
    own = {ctx.settings.smtp.sender.lower(), ctx.settings.university.help_desk_email.lower()}
    if ctx.settings.imap.username and "@" in ctx.settings.imap.username:
        own.add(ctx.settings.imap.username.lower())
    thread = find_thread(session, facts)
    reason = automatic_reason(facts, own)
    if reason is not None:
        return Outcome("ignored", reason, thread.id if thread else None)
    box = _Mailbox(ctx, session, facts, inbound_id)
    if thread is not None:
        # A reply to our answer or to staff: a person reads it; no automatic answer to a follow-up.
        support.add_message(ctx, session, thread, text=box.body_for_staff(), author=facts.sender,
                            email_message_id=facts.message_id)
        return Outcome("processed", "follow-up escalated", thread.id)
    student = session.exec(
        # The register stores addresses in lower case, so the plain index serves this lookup.
        select(Student).where(Student.email == facts.sender)
    ).first()
    if facts.oversize:
        thread = box.open(student, escalate=True)
        limit_mb = ctx.settings.imap.max_message_bytes // (1024 * 1024)
        sent = box.answer(thread, "too-large", ctx.catalog.text(
            box.lang, "mail.too_large", size_mb=f"{facts.size / (1024 * 1024):.1f}", limit_mb=limit_mb),
            recipient=facts.sender, kind="mail-notice")
        return Outcome("processed", "over the size limit: notice sent, escalated", thread.id, sent)
    question = _question_text(facts)
    match = faq.match(question, box.lang)
    if match is not None and match.entry.personal and student is None:
        # Personal data goes only to the register address; anyone can type a From header.
        thread = box.open(None, escalate=True)
        sent = box.answer(thread, "personal", ctx.catalog.text(
            box.lang, "mail.personal_register_only", domains=", ".join(ctx.settings.university.email_domains),
            tag=thread_tag(thread.id or 0)), recipient=facts.sender, kind="mail-notice")
        return Outcome("processed", "personal question from an unknown address: escalated", thread.id, sent)
    if match is not None:
        thread = box.open(student, escalate=False)
        if match.entry.personal and student is not None:
            body = _status_text(ctx, session, student, box.lang)
            recipient = student.email  # the register address, not whatever the From said
        else:
            body = match.entry.answer
            recipient = facts.sender
        if box.answer(thread, f"faq-{match.entry.id}", body, recipient=recipient, kind="mail-answer"):
            return Outcome("processed", f"answered from the FAQ ({match.entry.id})", thread.id, True)
        support.escalate_thread(ctx, session, thread, text=box.body_for_staff(), key="capped")
        return Outcome("processed", "daily answer cap reached: escalated", thread.id)
    thread = box.open(student, escalate=True)
    sent = box.answer(thread, "received", ctx.catalog.text(box.lang, "mail.escalated", tag=thread_tag(thread.id or 0)),
                      recipient=facts.sender, kind="mail-notice")
    return Outcome("processed", "escalated to staff", thread.id, sent)

