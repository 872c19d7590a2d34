"""After a full journey or a support mail, the database, its WAL and the logs hold no clear PESEL and no code."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from core.app.context import AppContext
from core.conversation.state import ConversationState
from core.messaging import sending
from core.messaging.outgoing import OutgoingMessage
from core.storage.db import unit_of_work
from core.storage.models import OutboxMessage, SupportMessage
from core.students.pesel import mask_pesel
from core.support.faq import Faq
from mail.inbound import process_pending, store_raw
from tests.chat_driver import ChatDriver
from tests.factories import activation_code, add_student, student_pesel


def separated_forms(pesel: str) -> tuple[str, str]:
    """The PESEL as the chat also accepts it (core.students.pesel.normalize_pesel): spaced and dashed."""
    return f"{pesel[:6]} {pesel[6:]}", "-".join([pesel[:3], pesel[3:6], pesel[6:9], pesel[9:]])


def secret_forms(pesel: str, code: str) -> dict[str, str]:
    """Other spellings the product accepts (core.credentials.issuer.normalize_code ignores case and separators)."""
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

    async def deliver(row: OutboxMessage, message: OutgoingMessage) -> sending.DeliveryResult:
        sent.append(message.text)
        return sending.DeliveryResult(ok=True)

    await sending.drain_once(sqlite_ctx.engine, sqlite_ctx.box, channel="email", now=sqlite_ctx.clock.now,
                            deliver=deliver)
    code = activation_code("\n".join(sent))  # the activation e-mail was delivered with its code
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

    async def deliver(row: OutboxMessage, message: OutgoingMessage) -> sending.DeliveryResult:
        sent.append(message)
        return sending.DeliveryResult(ok=True)

    await sending.drain_once(sqlite_ctx.engine, sqlite_ctx.box, channel="email", now=sqlite_ctx.clock.now,
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


# --- every step, every spelling, questions left pending ------------------------------------------

def _every_value(engine: sa.Engine) -> Iterator[tuple[str, str]]:
    """Every stored value of every table (saved conversation states included), as text."""
    tables = sa.MetaData()
    tables.reflect(engine)
    with engine.connect() as connection:
        for table in tables.sorted_tables:
            for row in connection.execute(sa.select(table)):
                for column, value in zip(table.columns, row, strict=True):
                    if value is not None:
                        text = bytes(value).decode("latin-1") if isinstance(value, bytes | memoryview) else str(value)
                        yield f"{table.name}.{column.name}", text


def _state(chat: ChatDriver) -> ConversationState:
    return chat.service.state_of(chat.channel, chat.account)


def _compact(text: str) -> str:
    """Letters and digits only, upper case: any spelling of a PESEL or an activation code becomes one."""
    return re.sub(r"[^0-9A-Za-z]", "", text).upper()


def _leaks(text: str, literal: dict[str, str], compact: dict[str, str]) -> list[str]:
    squeezed = _compact(text)
    return ([label for label, value in literal.items() if value in text]
            + [label for label, value in compact.items() if value in squeezed])


async def test_pesels_and_codes_typed_at_every_step_are_nowhere_in_clear(
    ctx: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    """A student pastes the PESEL and codes, in every spelling the product accepts, as free text at
    every step (and leaves questions pending): no table, no saved state, no WAL, no log keeps one."""
    caplog.set_level(logging.DEBUG)
    with unit_of_work(ctx.engine) as session:
        student, pesel = add_student(session, ctx.box)
    spaced, dashed = separated_forms(pesel)
    every_pesel = f"PESEL {pesel}, czyli {spaced}, albo {dashed}"
    chat = ChatDriver(ctx)
    chat.say("/start")
    chat.say(f"Dzień dobry, {every_pesel}")  # the language question: written in Polish, so Polish
    assert "terms:accept" in chat.buttons
    chat.say(f"Mam pytanie, {every_pesel}")  # the terms
    chat.press("terms:accept")
    chat.say(f"mój numer to {spaced}, a z kreskami {dashed}")  # the PESEL step, in words
    chat.say(spaced)  # the PESEL itself, spaced as the chat accepts it
    chat.say(f"nie pamiętam albumu, {every_pesel}")  # the second number's step
    chat.say(student.album)
    binding_code = chat.binding_code()
    chat.say(f"Gdzie jest kod? {every_pesel}")  # the code step
    chat.say(binding_code)
    assert _state(chat).student_id == student.id
    chat.press("menu:request")
    chat.say(f"zanim potwierdzę: {every_pesel}, kod z czatu {binding_code}")  # a confirmation pending
    chat.press("confirm:yes:request")
    sent: list[str] = []

    async def deliver(row: OutboxMessage, message: OutgoingMessage) -> sending.DeliveryResult:
        sent.append(message.text)
        return sending.DeliveryResult(ok=True)

    await sending.drain_once(ctx.engine, ctx.box, channel="email", now=ctx.clock.now, deliver=deliver)
    code = activation_code("\n".join(sent))  # the activation e-mail was delivered with its code
    every_code = (f"kod {code}, {code.lower()}, {code.lower().replace('-', ' ')}, "
                  f"{code.lower().replace('-', '')}")
    chat.press_anyway("menu:support")  # an older message's button: the question goes to staff at once
    chat.say(f"Proszę o pomoc: {every_pesel}; {every_code}; kod z czatu {binding_code}")
    with Session(ctx.engine) as session:
        [question] = session.exec(select(SupportMessage).where(SupportMessage.direction == "in")).all()
    assert mask_pesel(pesel) in question.body  # it reached staff, masked
    # Free text in the menu that no FAQ answers: kept as a draft until the student confirms; left pending.
    chat.say(f"Czy dziekanat jest otwarty w czwartek po południu? {every_pesel}; {every_code}")
    assert _state(chat).step == "confirm_support" and _state(chat).support_draft

    literal = {"pesel": pesel, "pesel (spaced)": spaced, "pesel (dashed)": dashed, "binding code": binding_code,
               **secret_forms(pesel, code)}
    compact = {"pesel (any spelling)": pesel, "activation code (any spelling)": _compact(code)}
    leaks = [f"{where}: {label}" for where, text in _every_value(ctx.engine)
             for label in _leaks(text, literal, compact)]
    assert not leaks, f"in the database: {leaks}"
    assert not _leaks(caplog.text, literal, compact), "in the logs"
    if ctx.engine.dialect.name == "sqlite":
        database = Path(ctx.engine.url.database or "")
        wal = database.with_name(database.name + "-wal")
        assert wal.exists()  # read while the service still has it open: what a copy of the disk would hold
        for path in (database, wal):
            raw = path.read_bytes().decode("latin-1")
            assert not _leaks(raw, literal, {}), f"in {path.name}: {_leaks(raw, literal, {})}"
