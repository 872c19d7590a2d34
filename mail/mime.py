"""MIME building: an OutgoingMessage becomes an RFC 5322 e-mail (stdlib `email` only, no I/O).

Shape of a message with HTML and an inline image (what mail clients render best):

    multipart/mixed
      multipart/alternative
        text/plain
        multipart/related
          text/html            (<img src="cid:...">)
          image/png            (Content-ID, inline)
      image/png                (attachment, the same QR for clients that hide inline parts)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from core.messaging.outgoing import Attachment, OutgoingMessage

__all__ = ["build_email", "fold_references"]

# Long References headers get truncated by some servers; RFC 5322 3.6.4 allows trimming the middle.
MAX_REFERENCES = 10


def fold_references(references: Sequence[str], in_reply_to: str | None) -> list[str]:
    """References for a reply: the parent's chain plus the parent, first and last kept when trimmed."""
    chain = [r for r in references if r]
    if in_reply_to and in_reply_to not in chain:
        chain.append(in_reply_to)
    if len(chain) > MAX_REFERENCES:
        chain = [chain[0], *chain[-(MAX_REFERENCES - 1):]]
    return chain


def _maintype(attachment: Attachment) -> tuple[str, str]:
    main, _, sub = attachment.content_type.partition("/")
    return main or "application", sub or "octet-stream"


def build_email(
    message: OutgoingMessage,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    date: datetime,
    reply_to: str | None = None,
) -> EmailMessage:
    """The complete e-mail; `message_id` includes the angle brackets."""
    inline = [a for a in message.attachments if a.inline_cid and message.html]
    body = EmailMessage(policy=SMTP)
    body.set_content(message.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if message.html:
        body.add_alternative(message.html, subtype="html", charset="utf-8", cte="quoted-printable")
        if inline:
            # The images belong to the HTML alternative only: related[html, png] inside alternative.
            html_part = body.get_payload()[1]  # type: ignore[index]
            assert isinstance(html_part, EmailMessage)
            for attachment in inline:
                main, sub = _maintype(attachment)
                html_part.add_related(
                    attachment.content, maintype=main, subtype=sub, cid=f"<{attachment.inline_cid}>",
                    disposition="inline", filename=attachment.filename,
                )
    for attachment in message.attachments:
        main, sub = _maintype(attachment)
        # The inline QR is attached once more: some clients (and printers) never show inline parts.
        body.add_attachment(attachment.content, maintype=main, subtype=sub, filename=attachment.filename)

    body["Message-ID"] = message_id
    body["Date"] = format_datetime(date)
    body["From"] = sender
    body["To"] = recipient
    if reply_to and reply_to != sender:
        body["Reply-To"] = reply_to
    body["Subject"] = message.subject or ""
    if message.auto_submitted:
        # RFC 3834 section 5: "auto-replied" for answers, "auto-generated" for notices.
        body["Auto-Submitted"] = message.auto_submitted
        # Exchange/Outlook honour this and do not send out-of-office answers to our automatic mail.
        body["X-Auto-Response-Suppress"] = "All"
    if message.in_reply_to:
        body["In-Reply-To"] = message.in_reply_to
    references = fold_references(message.references, message.in_reply_to)
    if references:
        body["References"] = " ".join(references)
    return body
