"""After a full journey or a support mail, the database file and the logs hold no clear PESEL and no code."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from core import outbox
from core.context import AppContext
from core.db import unit_of_work
from core.faq import Faq
from core.models import OutboxMessage
from core.outgoing import OutgoingMessage
from core.pesel import mask_pesel
from mail.inbound import process_pending, store_raw
from tests.chat_driver import ChatDriver
from tests.conftest import add_student, student_pesel


def separated_forms(pesel: str) -> tuple[str, str]:
    """The PESEL as the chat also accepts it (core.pesel.normalize_pesel): spaced and dashed."""
    return f"{pesel[:6]} {pesel[6:]}", "-".join([pesel[:3], pesel[3:6], pesel[6:9], pesel[9:]])


def secret_forms(pesel: str, code: str) -> dict[str, str]:
    """Other spellings the product accepts (core.issuer.normalize_code ignores case and separators)."""
    spaced, dashed = separated_forms(pesel)
    return {
        "pesel (spaced)": spaced, "pesel (dashed)": dashed,
        f"code {code} (lowercase)": code.lower(),
        f"code {code} (lowercase, spaced)": code.lower().replace("-", " "),
        f"code {code} (lowercase, plain)": code.lower().replace("-", ""),
    }


async def test_no_clear_pesel_or_code_in_database_or_logs(
    sqlite_ctx: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with unit_of_work(sqlite_ctx.engine) as session:
        student, pesel = add_student(session, sqlite_ctx.box)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("pl")
    chat.say(pesel[:10])  # a typo first: the wrong number must not be kept either
    chat.say(pesel)
    chat.say(student.album)
    binding_code = chat.binding_code()
    chat.say(binding_code)
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    sent: list[str] = []

    async def deliver(row: OutboxMessage, message: OutgoingMessage) -> outbox.DeliveryResult:
        sent.append(message.text)
        return outbox.DeliveryResult(ok=True)

    await outbox.drain_once(sqlite_ctx.engine, sqlite_ctx.box, channel="email", now=sqlite_ctx.clock.now,
                            deliver=deliver)
    activation_code = re.search(r"Kod aktywacyjny: (\S+)", "\n".join(sent))
    assert activation_code, "the activation e-mail was delivered with its code"
    code = activation_code.group(1)
    # The QR's content is printed in the e-mail for typing by hand: it must not stay behind either.
    qr_text = re.search(r"^(MLEG1:\S+)$", "\n".join(sent), re.MULTILINE)
    assert qr_text, "the activation e-mail carries the QR's content as text"
    # The student then asks for help in the chat, pasting both in every form the product accepts.
    chat.press_anyway("menu:support")
    chat.say(f"PESEL {separated_forms(pesel)[0]} / {separated_forms(pesel)[1]}, kod {code.lower()} "
             f"({code.lower().replace('-', ' ')}, {code.lower().replace('-', '')}), kod z czatu {binding_code}")
    sqlite_ctx.engine.dispose()
    database = Path(sqlite_ctx.settings.effective_database_url.removeprefix("sqlite:///"))
    blob = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    secrets = {
        "pesel": pesel, "pesel typo": pesel[:10], "binding code": binding_code,
        "activation code": code, "activation code (plain)": code.replace("-", ""),
        "QR content": qr_text.group(1), "QR token": qr_text.group(1).rsplit(":", 1)[1],
        **secret_forms(pesel, code),
    }
    for label, value in secrets.items():
        assert value.encode() not in blob, f"{label} found in the database file"
        assert value not in caplog.text, f"{label} found in the logs"


async def test_support_mail_with_pesel_and_code_leaves_none_in_clear(
    sqlite_ctx: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    """A student pastes a PESEL and an activation code into a support mail: after it is processed
    and answered, neither is in clear in the database file (the raw mail is gone) nor in the logs."""
    caplog.set_level(logging.DEBUG)
    pesel, code, chat_code = student_pesel(41), "K7MN-P2QR-TXWZ", "482913"
    spaced, dashed = separated_forms(pesel)
    letters_code = "KMNP-QRTX-WZAC"  # no digit in it: one code in twenty is drawn so
    raw = (f"From: Ola <ola@example.org>\r\nTo: {sqlite_ctx.settings.university.help_desk_email}\r\n"
           f"Subject: Problem PESEL {spaced}\r\nMessage-ID: <privacy-1@example.org>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           + "Dzień dobry,\r\n" + "> cytat z poprzedniej wiadomości\r\n" * 400  # the raw mail spans pages
           + f"mój PESEL {pesel} (czyli {dashed}). Kod aktywacyjny {code} nie działa, kod z czatu {chat_code} też.\r\n"
           + f"Poprzedni kod: {letters_code.lower()}, albo {letters_code.lower().replace('-', '')}, "
           + f"albo {code.lower().replace('-', ' ')}.\r\n").encode()
    stored = store_raw(sqlite_ctx, mailbox="INBOX", uidvalidity=1, uid=1, raw=raw, size=len(raw))
    assert stored.inbound_id is not None
    [done] = process_pending(sqlite_ctx, Faq.load(sqlite_ctx.settings.config_dir / "faq"))
    assert done.status == "processed"
    sent: list[OutgoingMessage] = []

    async def deliver(row: OutboxMessage, message: OutgoingMessage) -> outbox.DeliveryResult:
        sent.append(message)
        return outbox.DeliveryResult(ok=True)

    await outbox.drain_once(sqlite_ctx.engine, sqlite_ctx.box, channel="email", now=sqlite_ctx.clock.now,
                            deliver=deliver)
    assert sent and all(message.subject and mask_pesel(pesel) in message.subject for message in sent)
    sqlite_ctx.engine.dispose()
    database = Path(sqlite_ctx.settings.effective_database_url.removeprefix("sqlite:///"))
    blob = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    secrets = {"pesel": pesel, "activation code": code, "activation code (plain)": code.replace("-", ""),
               "chat code": chat_code, **secret_forms(pesel, code), **secret_forms(pesel, letters_code)}
    for label, value in secrets.items():
        assert value.encode() not in blob, f"{label} found in the database file"
        assert value not in caplog.text, f"{label} found in the logs"
        assert all(value not in f"{m.subject} {m.text}" for m in sent), f"{label} sent back"
