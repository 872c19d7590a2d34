"""Composes the e-mails the product sends, from the catalogs, in both languages.

The student's chosen language comes first and the other follows, so a student who
never chose one still reads the message.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from datetime import date, datetime

from core.app.catalog import Catalog
from core.app.clock import WARSAW
from core.credentials.issuer import ActivationData, qr_png
from core.messaging.contact import Contact
from core.messaging.outgoing import Attachment, OutgoingMessage
from core.storage.models import Credential, Student

__all__ = ["activation_email", "format_date", "format_datetime", "notice_email", "other_language"]

QR_CID = "qr-activation"


def other_language(language: str) -> str:
    return "en" if language == "pl" else "pl"


def format_date(day: date) -> str:
    return day.strftime("%d.%m.%Y")


def format_datetime(moment: datetime) -> str:
    return moment.astimezone(WARSAW).strftime("%d.%m.%Y %H:%M")


# An https address in our own texts (the bot's t.me link), without a sentence's closing punctuation.
_LINK = re.compile(r"https://[^\s<>\"()]+?(?=[.,;:!?]*(?:[\s<()]|$))")


def _text_to_html(text: str) -> str:
    """Paragraphs of escaped text; the links in it clickable (a student taps the bot's link)."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    return "".join(
        "<p>" + _LINK.sub(lambda m: f'<a href="{m[0]}">{m[0]}</a>', html.escape(p)).replace("\n", "<br>\n")
        + "</p>\n" for p in paragraphs
    )


def _html_page(body: str) -> str:
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"></head>'
        '<body style="font-family:Arial,Helvetica,sans-serif;line-height:1.45">\n'
        f"{body}</body></html>\n"
    )


def activation_email(
    catalog: Catalog,
    *,
    student: Student,
    credential: Credential,
    data: ActivationData,
    university: str,
    language: str,
    contact: Contact,
    resent: bool = False,
) -> OutgoingMessage:
    """The activation e-mail: the QR code (inline and attached, and its text to type by hand), the code,
    deadline and steps. `resent`: new data replacing what was sent before, which the mail says no
    longer works (a student comparing two mails must know which one to use)."""
    png = qr_png(data.qr_payload)
    texts: list[str] = []
    htmls: list[str] = []
    for lang in (language, other_language(language)):
        params = {
            "first_name": student.first_name,
            "university": university,
            "code": data.code,
            # What the QR encodes, for a student who cannot scan it (a phone cannot scan its own
            # screen): no more than the image in the same e-mail already gives away. The outbox
            # keeps this body encrypted and wipes it once sent; it is never logged.
            "qr_text": data.qr_payload,
            "deadline": format_datetime(data.deadline),
            "valid_until": format_date(credential.valid_until),
            **contact.params(catalog, lang),
        }
        note = catalog.text(lang, "email.activation.resent_note") + "\n\n" if resent else ""
        body = catalog.text(lang, "email.activation.body", **params)
        steps = catalog.text(lang, "activation.steps_all")
        texts.append(f"{note}{body}\n\n{steps}")
        htmls.append(
            (_text_to_html(note) if note else "")
            + _text_to_html(catalog.text(lang, "email.activation.body_before_qr", **params))
            + f'<p><img src="cid:{QR_CID}" alt="QR" width="264" height="264"></p>\n'
            + f'<p>{html.escape(catalog.text(lang, "email.activation.qr_text_label"))}<br>\n'
            + '<code style="font-size:14px;word-break:break-all">'
            + f'{html.escape(data.qr_payload)}</code></p>\n'
            # Labelled, and apart from the QR text: a student must not take one for the other.
            + f'<p>{html.escape(catalog.text(lang, "email.activation.code_label"))}<br>\n'
            + f'<b style="font-size:20px;letter-spacing:2px">{html.escape(data.code)}</b></p>\n'
            + _text_to_html(catalog.text(lang, "email.activation.body_after_qr", **params))
            + _text_to_html(steps)
        )
    subject = " / ".join(
        catalog.text(lang, "email.activation.subject", university=university)
        for lang in (language, other_language(language))
    )
    return OutgoingMessage(
        subject=subject,
        text="\n\n----------\n\n".join(texts),
        html=_html_page("<hr>\n".join(htmls)),
        attachments=[
            Attachment("mlegitymacja-qr.png", "image/png", png, inline_cid=QR_CID),
        ],
        auto_submitted="auto-generated",
    )


def notice_email(
    catalog: Catalog,
    key: str,
    *,
    language: str,
    contact: Contact,
    subject_key: str | None = None,
    catalog_params: Mapping[str, str] | None = None,
    **params: object,
) -> OutgoingMessage:
    """A plain notice in both languages (revocation, reminder, chat-binding code...).

    `contact`: where the student reaches us ({bot_chat}, {bot_link}, {help_desk}), in every notice.
    `catalog_params`: placeholders whose value is itself a catalog text (name -> key, e.g.
    reason -> "end_reason.new_phone"), put into each half in that half's language: a reason
    rendered once would stand in Polish in the English half.
    """
    subject_key = subject_key or f"{key}.subject"
    languages = (language, other_language(language))
    per_language = {
        lang: {**contact.params(catalog, lang), **params,
               **{name: catalog.text(lang, ref) for name, ref in (catalog_params or {}).items()}}
        for lang in languages
    }
    texts = [catalog.text(lang, f"{key}.body", **per_language[lang]) for lang in languages]
    subject = " / ".join(catalog.text(lang, subject_key, **per_language[lang]) for lang in languages)
    text = "\n\n----------\n\n".join(texts)
    return OutgoingMessage(
        subject=subject,
        text=text,
        html=_html_page("<hr>\n".join(_text_to_html(t) for t in texts)),
        auto_submitted="auto-generated",
    )
