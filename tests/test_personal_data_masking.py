"""Personal data masked in every form: separated PESELs and lowercase codes are masked in the chat's
support thread and the staff room, and the raw support mail leaves no clear bytes in the SQLite WAL.

(Production refusing the Maildir fallback lives in test_serve_start_errors.py.)"""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.messaging.outbox import open_body
from core.security.redact import redact_personal
from core.storage.db import make_engine, unit_of_work
from core.storage.models import (
    OutboxMessage,
    SupportMessage,
    SupportThread,
)
from core.students.demo_register import make_pesel
from core.students.pesel import mask_pesel
from core.support.faq import Faq
from mail import inbound
from mail.inbound import process_pending, store_raw
from tests.chat_driver import ChatDriver
from tests.factories import add_student, build_ctx, make_settings, student_pesel
from tests.support.chat import bound_chat

PESEL = student_pesel(53)
MASKED = mask_pesel(PESEL)
SPACED = f"{PESEL[:6]} {PESEL[6:]}"
DASHED = "-".join([PESEL[:3], PESEL[3:6], PESEL[6:9], PESEL[9:]])
WRONG_CHECK = PESEL[:-1] + str((int(PESEL[-1]) + 1) % 10)
# Valid as a PESEL (born 2248), written the way a Polish landline number is written.
PHONE_LIKE = make_pesel(date(2248, 1, 5), serial=3, female=False)
LETTERS_CODE = "kmnpqrtxwzac"  # twelve symbols of core.credentials.issuer.CODE_ALPHABET, no digit among them
_uid = itertools.count(1000)


# --- 1. every form the chat or the issuer accepts is masked ------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    (f"PESEL: {SPACED}", f"PESEL: {MASKED}"),
    (f"PESEL: {DASHED}.", f"PESEL: {MASKED}."),
    (f"{PESEL[:2]} {PESEL[2:4]} {PESEL[4:6]} {PESEL[6:]}", MASKED),
    (f"pesel {PESEL[:6]}\t{PESEL[6:]} ok", f"pesel {MASKED} ok"),
    (f"PESEL {PESEL[:4]}  -  {PESEL[4:]}", f"PESEL {MASKED}"),
    (f"PESEL{PESEL[:6]}-{PESEL[6:]}", f"PESEL{MASKED}"),
    (f"data 2026-10-05, PESEL {SPACED}, tel. 600 100 200", f"data 2026-10-05, PESEL {MASKED}, tel. 600 100 200"),
    ("".join(chr(ord("０") + int(d)) for d in PESEL), MASKED),  # typed on a full-width keyboard
    (f"code {LETTERS_CODE}", "code ************"),
    ("kmnp-qrtx-wzac", "****-****-****"),
    ("kod: kmnp qrtx wzac", "kod: **** **** ****"),
    ("kmnp qrtx wzac", "**** **** ****"),
    ("Kmnpqrtxwzac, help", "************, help"),
    ("k7mn.p2qr.txwz", "****.****.****"),
    ("K7MN–P2QR–TXWZ", "****–****–****"),
    ("k7mn_p2qr_txwz", "****_****_****"),
    ("k7mn / p2qr / txwz", "**** / **** / ****"),
    ("mój kod aktywacyjny to k7mnp2 qrtxwz", "mój kod aktywacyjny to ****** ******"),
    ("kod z czatu 482 913, nie działa", "kod z czatu *** ***, nie działa"),
    # Not personal data, or not proven to be: left as written.
    (f"PESEL {SPACED[:-1]}{WRONG_CHECK[-1]}", f"PESEL {SPACED[:-1]}{WRONG_CHECK[-1]}"),
    (f"PESEL {'-'.join([WRONG_CHECK[:3], WRONG_CHECK[3:6], WRONG_CHECK[6:]])}",
     f"PESEL {'-'.join([WRONG_CHECK[:3], WRONG_CHECK[3:6], WRONG_CHECK[6:]])}"),
    ("+48 600 100 200", "+48 600 100 200"),
    (f"tel. +{PHONE_LIKE[:2]} {PHONE_LIKE[2:4]} {PHONE_LIKE[4:7]} {PHONE_LIKE[7:9]} {PHONE_LIKE[9:]}",
     f"tel. +{PHONE_LIKE[:2]} {PHONE_LIKE[2:4]} {PHONE_LIKE[4:7]} {PHONE_LIKE[7:9]} {PHONE_LIKE[9:]}"),
    ("PL61 1090 1014 0000 0712 1981 2874", "PL61 1090 1014 0000 0712 1981 2874"),
    ("61 1090 1014 0000 0712 1981 2874", "61 1090 1014 0000 0712 1981 2874"),
    ("od 2026-10-05 do 05.11.2026 12:30", "od 2026-10-05 do 05.11.2026 12:30"),
    ("nr albumu 123456, pokój 12", "nr albumu 123456, pokój 12"),
    ("2347 6927 9234", "2347 6927 9234"),
    ("when what they", "when what they"),
    ("an undercurrent of doubt", "an undercurrent of doubt"),
    ("Re: code [MLEG-123456]", "Re: code [MLEG-123456]"),
    ("tel. 600 100 200, kod pocztowy 00-950", "tel. 600 100 200, kod pocztowy 00-950"),
])
def test_redact_separated_pesel_and_every_code_form(text: str, expected: str) -> None:
    assert redact_personal(text) == expected


def test_chat_support_message_with_separated_pesel_reaches_thread_and_staff_room_masked(
    tmp_path: Path, sqlite_url: str, clock: FixedClock
) -> None:
    settings = make_settings(tmp_path, database_url=sqlite_url, telegram={"token": "1:x", "staff_chat_id": -100123})
    ctx = build_ctx(settings, make_engine(sqlite_url), clock)
    try:
        with unit_of_work(ctx.engine) as session:
            student, pesel = add_student(session, ctx.box)
        spaced, dashed = f"{pesel[:6]} {pesel[6:]}", "-".join([pesel[:3], pesel[3:6], pesel[6:9], pesel[9:]])
        chat = ChatDriver(ctx)
        chat.identify(spaced, student.album, "en")  # the chat itself accepts the spaced form
        chat.press_anyway("menu:support")
        chat.say(f"I changed my phone. My PESEL is {spaced} (or {dashed}), code {LETTERS_CODE}, please help")
        with Session(ctx.engine) as session:
            kept = [t.subject for t in session.exec(select(SupportThread)).all()]
            kept += [m.body for m in session.exec(select(SupportMessage)).all()]
            staff = [open_body(ctx.box, row).text for row in session.exec(
                select(OutboxMessage).where(OutboxMessage.channel == "staff")).all()]
        assert kept and staff, "the thread was opened and the staff room told"
        for text in [*kept, *staff]:
            assert spaced not in text and dashed not in text and LETTERS_CODE not in text, text
        assert any(mask_pesel(pesel) in text for text in kept)
    finally:
        ctx.engine.dispose()


# --- 2. the raw support mail leaves no clear bytes in the SQLite files -------------------------

def _support_mail(ctx: AppContext, n: int, pesel: str) -> bytes:
    return (f"From: Ola <ola{n}@example.org>\r\nTo: {ctx.settings.university.help_desk_email}\r\n"
            f"Subject: pytanie {n}\r\nMessage-ID: <wal-{n}@example.org>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + "> cytat z poprzedniej wiadomości\r\n" * 300  # the raw mail spans pages
            + f"Mój PESEL to {pesel}, kod aktywacyjny KMNP-QRTX-WZAC. Aplikacja nie działa.\r\n").encode()


def _database_files(ctx: AppContext) -> dict[str, bytes]:
    database = Path(ctx.settings.effective_database_url.removeprefix("sqlite:///"))
    return {p.name: p.read_bytes() for p in database.parent.glob(database.name + "*")}


def _deliver(ctx: AppContext, pesels: list[str]) -> None:
    for pesel in pesels:
        uid = next(_uid)
        raw = _support_mail(ctx, uid, pesel)
        store_raw(ctx, mailbox="INBOX", uidvalidity=1, uid=uid, raw=raw, size=len(raw))


def test_processed_mail_leaves_no_clear_pesel_in_the_database_nor_its_wal(sqlite_ctx: AppContext) -> None:
    """The engine stays open, as under `mleg serve`: closing it would checkpoint and hide the WAL."""
    pesels = [student_pesel(60 + i) for i in range(3)]
    _deliver(sqlite_ctx, pesels)
    assert any(pesels[0].encode() in data for data in _database_files(sqlite_ctx).values()), "stored raw first"

    done = process_pending(sqlite_ctx, Faq.load(sqlite_ctx.settings.config_dir / "faq"))

    assert [d.status for d in done] == ["processed"] * 3
    files = _database_files(sqlite_ctx)
    assert {"test.db", "test.db-wal"} <= set(files), "SQLite in WAL mode"
    for name, data in files.items():
        for pesel in pesels:
            assert pesel.encode() not in data, f"a clear PESEL in {name}"
        assert b"KMNP-QRTX-WZAC" not in data, f"a clear code in {name}"


def test_one_checkpoint_per_batch_and_a_blocked_one_is_retried(
    sqlite_ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []
    real = inbound.checkpoint_wal

    def counted(engine: Engine, **kwargs: int) -> bool:
        calls.append(real(engine, **kwargs))
        return calls[-1]

    monkeypatch.setattr(inbound, "checkpoint_wal", counted)
    faq = Faq.load(sqlite_ctx.settings.config_dir / "faq")
    _deliver(sqlite_ctx, [student_pesel(70 + i) for i in range(4)])
    assert len(process_pending(sqlite_ctx, faq)) == 4
    assert calls == [True], "one checkpoint for the batch of four"

    assert process_pending(sqlite_ctx, faq) == [] and calls == [True], "nothing forgotten: no checkpoint"

    # A reader in the middle of a long read keeps the WAL: the checkpoint gives up quickly
    # and the next batch (even an empty one) tries again.
    pesel = student_pesel(80)
    _deliver(sqlite_ctx, [pesel])
    reader = sqlite_ctx.engine.raw_connection()
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM inbound_mail").fetchall()
        assert len(process_pending(sqlite_ctx, faq)) == 1
        assert calls == [True, False]
    finally:
        reader.rollback()
        reader.close()
    assert process_pending(sqlite_ctx, faq) == []
    assert calls == [True, False, True]
    assert all(pesel.encode() not in data for data in _database_files(sqlite_ctx).values())


# --- a PESEL typed into a help-desk question -------------------------------------------------------

def test_a_pesel_in_a_support_question_is_masked_everywhere(sqlite_ctx: AppContext) -> None:
    from core.storage.models import Conversation, SupportMessage, SupportThread
    from tests.factories import student_pesel

    chat, _ = bound_chat(sqlite_ctx, "en")
    typed = student_pesel(901)
    chat.say("/support")
    chat.say(f"My PESEL is {typed}, the code K7MN-P2QR-TXWZ does not work, help")
    assert "ticket no. 1" in chat.text
    with Session(sqlite_ctx.engine) as session:
        stored = [t.subject for t in session.exec(select(SupportThread)).all()]
        stored += [m.body for m in session.exec(select(SupportMessage)).all()]
        stored += [c.state for c in session.exec(select(Conversation)).all()]
    assert stored and not any(typed in text or "K7MN-P2QR-TXWZ" in text for text in stored)
    assert any(f"{typed[:2]}*******{typed[-2:]}" in text for text in stored)
