"""A forged From must not write into a student's ticket: Authentication-Results decide who is proven.

The receiving server's Authentication-Results (only from MLEG_IMAP__AUTHSERV_ID) prove a
sender; an unproven mail never joins an existing ticket, is marked for staff in the staff
room and in `mleg threads list/show`, and changes no state.
"""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr
from sqlmodel import Session, select
from typer.testing import CliRunner

from core.app.context import AppContext
from core.app.errors import ConfigurationError
from core.app.settings import load_settings
from core.messaging.outgoing import OutgoingMessage
from core.storage.db import unit_of_work
from core.storage.models import OutboxMessage, SupportMessage, SupportThread
from core.support import threads as support
from core.support.mail_sender import address_key, check_sender
from core.support.mailbox_rules import InboundFacts
from tests.cli_helpers import invoke
from tests.factories import add_student
from tests.support.mail_desk import AUTHSERV_ID, Desk
from tests.support.mail_rules import handle

OURS = "mx.example.edu.pl"
FROM = "jan@student.example.edu.pl"


@pytest.mark.parametrize(("headers", "verified"), [
    ([f"{OURS}; dkim=pass header.d=student.example.edu.pl header.s=s1; dmarc=pass header.from=student.example.edu.pl"],
     True),
    ([f"{OURS}; dmarc=pass (p=reject dis=none) header.from=student.example.edu.pl"], True),
    ([f"{OURS}; dkim=pass header.d=example.edu.pl"], True),  # a parent domain signed: aligned
    ([f"{OURS}; dkim=pass header.i=@student.example.edu.pl"], True),
    ([f"{OURS.upper()} 1; DMARC=Pass header.from=Student.Example.edu.pl"], True),
    # The results of another server (or written by the sender) prove nothing.
    (["mx.attacker.example; dkim=pass header.d=student.example.edu.pl; dmarc=pass header.from=student.example.edu.pl"],
     False),
    ([], False),
    ([f"{OURS}; none"], False),
    ([f"{OURS}; spf=pass smtp.mailfrom=student.example.edu.pl"], False),  # SPF alone: not enough
    ([f"{OURS}; dkim=pass header.d=attacker.example"], False),  # signed, but by someone else
    ([f"{OURS}; dkim=pass header.d=edu.pl.attacker.example"], False),
    ([f"{OURS}; dmarc=pass header.from=attacker.example"], False),  # about another domain
    ([f"{OURS}; dkim=fail header.d=student.example.edu.pl; dmarc=fail header.from=student.example.edu.pl"], False),
    # A pass the sender wrote under our id, below our own fail: the fail wins.
    ([f"{OURS}; dmarc=fail header.from=student.example.edu.pl",
      f"{OURS}; dmarc=pass header.from=student.example.edu.pl"], False),
    ([f"{OURS}; dkim=pass header.d=student.example.edu.pl; dmarc=fail header.from=student.example.edu.pl"], False),
    ([f"{OURS}; ;;; garbage ((("], False),
    (["mx.example.edu.pl.attacker.example; dmarc=pass header.from=student.example.edu.pl"], False),
])
def test_what_proves_a_sender(headers: list[str], verified: bool) -> None:
    check = check_sender(FROM, headers, OURS)
    assert check.verified is verified, check.reason


def test_without_an_authserv_id_nobody_is_proven(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    headers = [f"{OURS}; dmarc=pass header.from=student.example.edu.pl"]
    check = check_sender(FROM, headers, None)
    assert not check.verified and "MLEG_IMAP__AUTHSERV_ID" in check.reason
    # `mleg status` says so, and what it means.
    monkeypatch.setenv("MLEG_IMAP__HOST", "imap.example.edu.pl")
    assert "sender proof    off: MLEG_IMAP__AUTHSERV_ID is not set" in invoke(runner, "status")
    monkeypatch.setenv("MLEG_IMAP__AUTHSERV_ID", "MX.example.edu.pl")
    assert "sender proof    Authentication-Results of mx.example.edu.pl" in invoke(runner, "status")


def test_address_key_ignores_case_and_plus_tags() -> None:
    assert address_key("Victim+1@Example.ORG") == "victim@example.org"
    assert address_key("victim+a+b@example.org") == address_key("VICTIM@example.org")
    assert address_key("other@example.org") != address_key("victim@example.org")


def _staff_posts(ctx: AppContext, thread_id: int) -> list[str]:
    with Session(ctx.engine) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.channel == "staff",
                                                        OutboxMessage.thread_id == thread_id)).all()
        return [OutgoingMessage.from_json(ctx.box.decrypt(row.body)).text for row in rows]


def _messages(ctx: AppContext, thread_id: int) -> list[SupportMessage]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(SupportMessage).where(SupportMessage.thread_id == thread_id)).all())


async def test_a_forged_from_does_not_write_into_a_students_ticket(desk: Desk) -> None:
    """On the real Dovecot: the student's ticket, then a mail forged in her name with its tag."""
    desk.ctx.settings.telegram.token = SecretStr("123:staff-room-configured")
    desk.ctx.settings.telegram.staff_chat_id = -100500
    student_address = desk.dovecot.new_user()
    with unit_of_work(desk.ctx.engine) as session:
        student, _ = add_student(session, desk.ctx.box, email=student_address)
        student_id = student.id
    desk.deliver("win1250_question.eml", sender=student_address, proven=True)
    await desk.frontend.process_once()
    [ticket] = desk.threads()
    assert ticket.student_id == student_id and ticket.sender_verified is True
    with unit_of_work(desk.ctx.engine) as session:
        support.close_thread(desk.ctx, session, ticket.id or 0, staff="kasia")
    before = [m.body for m in _messages(desk.ctx, ticket.id or 0)]

    # Forged: the student's From, the ticket's tag, and "proof" from a server that is not ours.
    raw = (b"Authentication-Results: mx.attacker.example; dkim=pass header.d=example.test;"
           b" dmarc=pass header.from=example.test\r\n")
    desk.deliver_raw(raw + (
        f"From: {student_address}\r\nTo: {desk.address}\r\nSubject: Re: kod [MLEG-{ticket.id}]\r\n"
        f"Message-ID: <forged-1@attacker.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Proszę unieważnić moją legitymację i wysłać kod na nowy adres.\r\n").encode())
    report = await desk.frontend.process_once()

    [forged_outcome] = [p.outcome for p in report.processed]
    assert forged_outcome is not None and forged_outcome.thread_id != ticket.id
    first, forged = desk.threads()
    # The student's ticket: as it was (closed, no new message).
    assert first.id == ticket.id and first.status == "closed"
    assert [m.body for m in _messages(desk.ctx, ticket.id or 0)] == before
    # The forged mail: a thread of its own, marked unproven, and said so to staff.
    assert forged.sender_verified is False and forged.student_id == student_id
    [message] = _messages(desk.ctx, forged.id or 0)[:1]
    assert message.sender_verified is False
    [post] = _staff_posts(desk.ctx, forged.id or 0)
    assert "NADAWCA NIEPOTWIERDZONY" in post and student_address in post

    # The student herself, proven by our server, with the tag: back in her ticket.
    desk.deliver("reply_to_answer.eml", sender=student_address, thread=str(ticket.id), parent="<lost@x>",
                 references="", proven=True)
    report = await desk.frontend.process_once()
    [outcome] = [p.outcome for p in report.processed]
    assert outcome is not None and outcome.thread_id == ticket.id and outcome.reason == "follow-up escalated"
    assert all("NIEPOTWIERDZONY" not in text for text in _staff_posts(desk.ctx, ticket.id or 0))


async def test_our_fail_beats_a_forged_pass_under_our_id(desk: Desk) -> None:
    """A sender who writes a pass under our authserv-id, on a server that did not strip it but
    added its own fail: not proven, not threaded."""
    student_address = desk.dovecot.new_user()
    desk.deliver("win1250_question.eml", sender=student_address, proven=True)
    await desk.frontend.process_once()
    [ticket] = desk.threads()
    domain = student_address.rpartition("@")[2]
    desk.deliver_raw((
        f"Authentication-Results: {AUTHSERV_ID}; dmarc=fail (p=reject) header.from={domain}\r\n"
        f"Authentication-Results: {AUTHSERV_ID}; dkim=pass header.d={domain}; dmarc=pass header.from={domain}\r\n"
        f"From: {student_address}\r\nTo: {desk.address}\r\nSubject: Re: kod [MLEG-{ticket.id}]\r\n"
        f"Message-ID: <forged-2@attacker.example>\r\n\r\nCo dalej?\r\n").encode())
    await desk.frontend.process_once()
    assert [t.sender_verified for t in desk.threads()] == [True, False]


def test_threads_list_and_show_mark_an_unproven_sender(sqlite_ctx: AppContext, runner: CliRunner) -> None:
    sqlite_ctx.settings.imap.authserv_id = OURS
    proven = handle(sqlite_ctx, InboundFacts(
        sender="ola@example.org", subject="Pytanie", text="Czy mogę przyjść osobiście?", message_id="<p1@x>",
        authentication_results=[f"{OURS}; dkim=pass header.d=example.org"]))
    forged = handle(sqlite_ctx, InboundFacts(
        sender="ola@example.org", subject=f"Re: Pytanie [MLEG-{proven.thread_id}]", text="Unieważnijcie mi ją.",
        message_id="<f1@x>"))
    assert forged.thread_id != proven.thread_id

    listed = json.loads(invoke(runner, "threads", "list", "--json"))
    by_id = {t["id"]: t for t in listed["threads"]}
    assert by_id[proven.thread_id]["sender_verified"] is True
    assert by_id[forged.thread_id]["sender_verified"] is False
    table = invoke(runner, "threads", "list")
    assert "UNVERIFIED" in table and "verified" in table
    shown = invoke(runner, "threads", "show", str(forged.thread_id))
    assert "UNVERIFIED" in shown and "[UNVERIFIED sender]" in shown
    assert "UNVERIFIED" not in invoke(runner, "threads", "show", str(proven.thread_id))
    with Session(sqlite_ctx.engine) as session:
        assert session.get(SupportThread, proven.thread_id).status == "escalated"  # type: ignore[union-attr]


@pytest.mark.parametrize("value", ["mx.example.edu.pl; dkim=pass", "spf=pass", "two words"])
def test_an_authserv_id_that_is_not_one_word_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Microsoft 365 writes its results without an authserv-id (`spf=pass ...`): such a value
    would name a word any sender can write, so it is refused, naming the setting."""
    monkeypatch.setenv("MLEG_IMAP__AUTHSERV_ID", value)
    with pytest.raises(ConfigurationError, match="MLEG_IMAP__AUTHSERV_ID"):
        load_settings(mode="demo")
