"""A PESEL or a code pasted into a support mail is masked in what we keep and what we send back."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from core.app.context import AppContext
from core.messaging.outgoing import OutgoingMessage
from core.security.redact import redact_personal
from core.storage.models import OutboxMessage, SupportMessage, SupportThread
from core.students.pesel import mask_pesel
from core.support.mailbox_rules import InboundFacts
from core.support.threads import reply_subject
from tests.factories import student_pesel
from tests.support.mail_rules import handle

PESEL = student_pesel(37, female=True)
CODE = "K7MN-P2QR-TXWZ"  # made of core.credentials.issuer.CODE_ALPHABET, as LocalIssuer prints it


@pytest.mark.parametrize(("text", "expected"), [
    (f"Problem PESEL {PESEL}", f"Problem PESEL {mask_pesel(PESEL)}"),
    (f"PESEL:{PESEL}.", f"PESEL:{mask_pesel(PESEL)}."),
    (f"Kod aktywacyjny {CODE} nie działa", "Kod aktywacyjny ****-****-**** nie działa"),
    ("kod k7mn p2qr txwz", "kod **** **** ****"),
    ("K7MNP2QRTXWZ", "************"),
    ("mój kod z czatu to 482913, nie działa", "mój kod z czatu to ******, nie działa"),
    ("482913 - to ten code", "****** - to ten code"),
    ("MLEG1:4f2a-9c:ACDEFGHJKMNPQRTUVWXYZ234", "MLEG1:***"),
    # Not personal data: left as written.
    ("nr albumu 123456, pokój 12", "nr albumu 123456, pokój 12"),
    (f"konto {PESEL[:-1]}{(int(PESEL[-1]) + 1) % 10}", f"konto {PESEL[:-1]}{(int(PESEL[-1]) + 1) % 10}"),
    ("12345678901234567890", "12345678901234567890"),
    ("when what they", "when what they"),
    ("Re: code [MLEG-123456]", "Re: code [MLEG-123456]"),
])
def test_redact_personal(text: str, expected: str) -> None:
    assert redact_personal(text) == expected


def test_reply_subject_is_masked_with_one_tag() -> None:
    assert reply_subject(f"Problem PESEL {PESEL}", 37) == f"Re: Problem PESEL {mask_pesel(PESEL)} [MLEG-37]"


def test_pesel_and_code_in_a_support_mail_are_stored_and_echoed_masked(sqlite_ctx: AppContext) -> None:
    facts = InboundFacts(sender="ola@example.org", subject=f"Problem PESEL {PESEL}",
                         text=f"mój PESEL {PESEL}. Kod aktywacyjny {CODE} nie działa",
                         sender_name=f"Ola {PESEL}", message_id="<pesel-1@example.org>")
    outcome = handle(sqlite_ctx, facts)

    assert outcome.thread_id is not None
    with Session(sqlite_ctx.engine) as session:
        thread = session.get(SupportThread, outcome.thread_id)
        messages = list(session.exec(select(SupportMessage)).all())
        sent = [OutgoingMessage.from_json(sqlite_ctx.box.decrypt(row.body))
                for row in session.exec(select(OutboxMessage).where(OutboxMessage.channel == "email")).all()]
    assert thread is not None and thread.subject == f"Problem PESEL {mask_pesel(PESEL)}"
    [question] = [m for m in messages if m.direction == "in"]
    assert question.body == f"mój PESEL {mask_pesel(PESEL)}. Kod aktywacyjny ****-****-**** nie działa"
    assert PESEL not in question.author
    assert sent, "the sender is answered"
    for message in sent:
        assert message.subject == f"Re: Problem PESEL {mask_pesel(PESEL)} [MLEG-{thread.id}]"
    stored_text = " ".join([*(m.body for m in messages), *(m.text for m in sent)])
    assert PESEL not in stored_text and CODE not in stored_text
