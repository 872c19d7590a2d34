"""The support mailbox against a real Dovecot: auto mail ignored, FAQ answered, threads, dedupe, restarts."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from core.storage.models import SupportMessage
from mail import frontend, inbound
from mail.frontend import MailFrontend
from tests.factories import add_student
from tests.mail_samples.kit import parse
from tests.support.mail_desk import Desk, mail_number


async def test_automatic_mail_is_never_answered(desk: Desk) -> None:
    desk.deliver("outlook_out_of_office.eml", sender="jan.kowalski@student.example.edu.pl")
    desk.deliver("postfix_bounce.eml", mail_from="")
    desk.deliver("list_mail.eml", mail_from="studenci-bounces@lists.example.edu.pl")

    report = await desk.frontend.process_once()

    assert [p.status for p in report.processed] == ["ignored"] * 3
    reasons = [r.error or "" for r in desk.rows()]
    assert reasons[0].startswith("Auto-Submitted") and "auto-generated" in reasons[0]
    assert "Auto-Submitted: auto-replied" in reasons[1]
    assert reasons[2].startswith("Precedence")
    assert desk.outbox() == [] and desk.threads() == []
    assert desk.unseen() == []  # flagged after the commit


AUTO_REPLY = ("From: {sender}\nTo: {support}\nSubject: {subject}\nMessage-ID: <auto-{n}@x>\n{header}"
              "Content-Type: text/plain; charset=utf-8\n\nNie dostałem maila z kodem. Wracam 12 października.\n")


@pytest.mark.parametrize(("header", "subject"), [
    ("Precedence: auto_reply\n", "Re: Nie dostałem maila z kodem"),
    ("X-Autoreply: yes\n", "Re: Nie dostałem maila z kodem"),
    ("X-Autorespond: Nie dostałem maila z kodem\n", "Re: Nie dostałem maila z kodem"),
    ("", "Automatic reply: Nie dostałem maila z kodem"),
    ("", "Auto: Nie dostałem maila z kodem"),
    ("", "Out of Office: Nie dostałem maila z kodem"),
    ("", "Automatyczna odpowiedź: Nie dostałem maila z kodem"),
    ("", "Odpowiedź automatyczna: Re: Nie dostałem maila z kodem"),
    ("", "Nieobecność: Re: Nie dostałem maila z kodem"),
])
async def test_vendor_auto_replies_are_never_answered(desk: Desk, header: str, subject: str) -> None:
    """Autoresponders that send no Auto-Submitted: their own headers, or only their subject."""
    (Path(desk.ctx.settings.var_dir) / "auto.eml").write_text(AUTO_REPLY.replace("{header}", header))
    desk.deliver_raw(sample_from(Path(desk.ctx.settings.var_dir) / "auto.eml", sender="jan@example.org",
                                 support=desk.address, subject=subject, n=mail_number()))

    report = await desk.frontend.process_once()

    assert [p.status for p in report.processed] == ["ignored"]
    assert desk.outbox() == [] and desk.threads() == []


async def test_windows_1250_question_answered_in_polish_and_threaded(desk: Desk) -> None:
    student = desk.dovecot.new_user()
    desk.deliver("win1250_question.eml", sender=student)

    report = await desk.frontend.process_once()

    [processed] = report.processed
    assert processed.outcome is not None and processed.outcome.reason == "answered from the FAQ (email_not_arrived)"
    [thread] = desk.threads()
    assert thread.status == "answered" and thread.language == "pl" and thread.account_id == student
    with Session(desk.ctx.engine) as session:
        first = session.exec(select(SupportMessage).where(SupportMessage.thread_id == thread.id)).first()
    assert first is not None and "nie dostałem maila z kodem" in first.body and "Paweł Łęcki" in first.author
    [answer] = await desk.send_answers()
    assert answer["To"] == student
    assert answer["Auto-Submitted"] == "auto-replied"
    assert answer["In-Reply-To"] == thread.last_email_message_id
    assert answer["Subject"] == f"Re: Nie dostałem maila z kodem [MLEG-{thread.id}]"
    body = answer.get_body(("plain",))
    assert body is not None and "adres uczelniany" in body.get_content()
    [delivered] = desk.dovecot.fetch_all(student)  # the student finds it in the mailbox
    assert parse(delivered)["Message-ID"] == answer["Message-ID"]

    # The student answers the answer: same thread, to staff, and no second automatic answer.
    desk.deliver("reply_to_answer.eml", sender=student, thread=str(thread.id), parent=answer["Message-ID"],
                 references=f"{thread.last_email_message_id} {answer['Message-ID']}", proven=True)
    report = await desk.frontend.process_once()
    assert report.processed[0].outcome is not None and report.processed[0].outcome.thread_id == thread.id
    [thread] = desk.threads()
    assert thread.status == "escalated"
    assert len(desk.outbox()) == 1


async def test_subject_tag_alone_does_not_merge_another_senders_mail(desk: Desk) -> None:
    student = desk.dovecot.new_user()
    desk.deliver("win1250_question.eml", sender=student)
    await desk.frontend.process_once()
    [thread] = desk.threads()

    desk.deliver("reply_to_answer.eml", sender="someone.else@example.org", thread=str(thread.id),
                 parent="<unknown@x>", references="<unknown@x>")
    [other] = (await desk.frontend.process_once()).processed
    first, second = desk.threads()
    assert first.id == thread.id and first.account_id == student
    assert second.account_id == "someone.else@example.org"
    assert other.outcome is not None and other.outcome.thread_id == second.id

    desk.deliver("reply_to_answer.eml", sender=student, thread=str(thread.id), parent="<lost@x>", references="",
                 proven=True)
    [again] = (await desk.frontend.process_once()).processed
    assert len(desk.threads()) == 2
    # The tag from the thread's own (proven) address threads it: the reply joined the student's thread.
    assert again.outcome is not None and again.outcome.thread_id == thread.id
    assert _inbound_messages(desk, thread.id or 0) == 2 and _inbound_messages(desk, second.id or 0) == 1


def _inbound_messages(desk: Desk, thread_id: int) -> int:
    with Session(desk.ctx.engine) as session:
        return len(session.exec(select(SupportMessage).where(SupportMessage.thread_id == thread_id,
                                                             SupportMessage.direction == "in")).all())


async def test_reply_headers_from_another_address_open_a_thread_of_its_own(desk: Desk) -> None:
    """In-Reply-To to our answer in a student's thread, from someone else: a new thread for the
    new sender (who is answered), and staff told which thread it referred to."""
    student = desk.dovecot.new_user()
    desk.deliver("win1250_question.eml", sender=student)
    await desk.frontend.process_once()
    [thread] = desk.threads()
    [answer] = await desk.send_answers()

    other = desk.dovecot.new_user()
    desk.deliver("reply_to_answer.eml", sender=other, thread=str(thread.id), parent=answer["Message-ID"],
                 references=f"{thread.last_email_message_id} {answer['Message-ID']}")
    report = await desk.frontend.process_once()

    first, second = desk.threads()
    assert first.id == thread.id and first.status == "answered" and first.account_id == student
    assert report.processed[0].outcome is not None and report.processed[0].outcome.thread_id == second.id
    assert second.account_id == other
    with Session(desk.ctx.engine) as session:
        [question] = session.exec(select(SupportMessage).where(SupportMessage.thread_id == second.id,
                                                               SupportMessage.direction == "in")).all()
    assert "Co dalej?" in question.body and f"ticket {thread.id}" in question.body
    assert [row.recipient for row in desk.outbox()] == [student, other]  # the new sender is answered


async def test_same_mail_twice_and_mail_without_message_id_are_stored_once(desk: Desk) -> None:
    raw = desk.deliver("no_message_id.eml")
    desk.deliver_raw(raw)  # the same mail delivered twice (To and Cc)
    desk.deliver("win1250_question.eml", sender="a@example.org", n="same")
    desk.deliver("win1250_question.eml", sender="a@example.org", n="same")

    report = await desk.frontend.process_once()

    assert (report.stored, report.duplicates) == (2, 2)
    assert desk.rows()[0].message_id is None
    answers = await desk.send_answers()
    assert len(answers) == 2
    english = next(a for a in answers if a["To"] == "student-bez-id@example.org")
    assert english["Subject"].startswith("Re: Price [MLEG-")
    body = english.get_body(("plain",))
    assert body is not None and body.get_content().startswith("Hello,")
    assert desk.unseen() == []


async def test_rfc2047_rfc2231_and_broken_charsets_are_read(desk: Desk) -> None:
    desk.deliver("rfc2047_2231.eml", sender="z@example.org")
    desk.deliver("broken_charset.eml", sender="b@example.org")

    report = await desk.frontend.process_once()

    assert [p.status for p in report.processed] == ["processed", "processed"]
    first, _ = desk.threads()
    assert first.subject == "Błąd przy skanowaniu kodu żółtego"
    with Session(desk.ctx.engine) as session:
        messages = list(session.exec(select(SupportMessage).where(SupportMessage.direction == "in")).all())
    assert messages[0].author == "Zbigniew Żółtkowska <z@example.org>"
    assert "błąd po zeskanowaniu" in messages[0].body and "zrzut ekranu żółty.png" in messages[0].body
    assert "legitymacj" in messages[1].body and "nie dzia" in messages[1].body


async def test_personal_question_answered_only_to_the_register_address(desk: Desk) -> None:
    address = desk.dovecot.new_user(domain="student.example.edu.pl")
    with Session(desk.ctx.engine) as session:
        add_student(session, desk.ctx.box, email=address, first_name="Ewa")
        session.commit()
    question = ("From: {sender}\nTo: {support}\nSubject: Pytanie\nMessage-ID: <p-{n}@x>\n"
                "Content-Type: text/plain; charset=utf-8\n\nJaki jest status wniosku? Czy mam legitymację?\n")
    for sender in (address.upper(), "ewa.prywatna@example.org"):
        (Path(desk.ctx.settings.var_dir) / "q.eml").write_text(question)
        desk.deliver_raw(sample_from(Path(desk.ctx.settings.var_dir) / "q.eml", sender=sender,
                                     support=desk.address, n=mail_number()))

    await desk.frontend.process_once()

    mine, foreign = desk.threads()
    assert mine.status == "answered" and foreign.status == "escalated" and foreign.student_id is None
    answers = {a["To"]: a.get_body(("plain",)).get_content() for a in await desk.send_answers()}  # type: ignore[union-attr]
    # The status (no credential yet) only to the register address; Polish mail greets without the name.
    assert "nie masz jeszcze" in answers[address].lower()
    assert "nie masz jeszcze" not in answers["ewa.prywatna@example.org"].lower()
    assert "Ewa" not in answers["ewa.prywatna@example.org"]
    assert "rejestru studentów" in answers["ewa.prywatna@example.org"]


def sample_from(path: Path, **values: str) -> bytes:
    raw = path.read_bytes()
    for key, value in values.items():
        raw = raw.replace(("{" + key + "}").encode(), value.encode())
    return raw.replace(b"\n", b"\r\n")


async def test_automatic_answers_are_capped_per_sender_and_day(desk: Desk) -> None:
    for _ in range(4):
        desk.deliver("no_message_id.eml".replace("no_message_id", "win1250_question"), sender="same@example.org")

    await desk.frontend.process_once()

    assert len(desk.outbox()) == desk.ctx.settings.imap.auto_replies_per_sender_per_day == 3
    assert [t.status for t in desk.threads()] == ["answered"] * 3 + ["escalated"]
    with Session(desk.ctx.engine) as session:
        [question] = session.exec(select(SupportMessage).where(SupportMessage.thread_id == desk.threads()[3].id)).all()
    assert "daily limit of automatic answers" in question.body  # staff see why it is theirs
    desk.ctx.clock.advance(hours=25)  # type: ignore[attr-defined]
    desk.deliver("win1250_question.eml", sender="same@example.org")
    await desk.frontend.process_once()
    assert len(desk.outbox()) == 4


@pytest.mark.slow
async def test_25_mb_attachment_handled_in_bounded_memory_with_a_notice(desk: Desk,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    message = EmailMessage()
    message["From"] = "big@example.org"
    message["To"] = desk.address
    message["Subject"] = "Zrzut ekranu"
    message["Message-ID"] = "<big-1@example.org>"
    message.set_content("W załączniku nagranie ekranu: aplikacja się zawiesza.")
    message.add_attachment(b"\0" * (25 * 1024 * 1024), maintype="video", subtype="mp4", filename="ekran.mp4")
    raw = message.as_bytes()
    desk.deliver_raw(raw)
    del message, raw
    stored: list[int] = []

    def recording(*args: Any, fetched: list[inbound.Fetched], **kwargs: Any) -> list[inbound.StoreResult]:
        stored.extend(len(item.raw) for item in fetched)
        return inbound.store_fetched(*args, fetched=fetched, **kwargs)

    monkeypatch.setattr(frontend, "store_fetched", recording)
    report = await desk.frontend.process_once()

    [row] = desk.rows()
    assert row.size > desk.ctx.settings.imap.max_message_bytes
    assert stored and stored[0] < 300 * 1024  # only the head was fetched and stored
    assert desk.raw(row) is None  # and not kept once processed
    assert report.processed[0].outcome is not None and "size limit" in report.processed[0].outcome.reason
    [thread] = desk.threads()
    assert thread.status == "escalated"
    [notice] = await desk.send_answers()
    assert "limit" in notice.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert desk.unseen() == []


class Crash(BaseException):
    """Stands for the process being killed (not an Exception: nothing may catch it)."""


async def test_restart_mid_batch_loses_nothing_and_answers_once(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(3):
        desk.deliver("win1250_question.eml", sender=f"s{n}@example.org")
    real = inbound.handle_inbound
    calls = 0

    def dying(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        outcome = real(*args, **kwargs)  # the answer is decided and queued, but never committed
        if calls == 2:
            raise Crash
        return outcome

    monkeypatch.setattr(inbound, "handle_inbound", dying)
    with pytest.raises(Crash):
        await desk.frontend.process_once()
    assert [r.status for r in desk.rows()] == ["processed", "new", "new"]  # every raw mail is stored
    assert [desk.raw(r) is None for r in desk.rows()] == [True, False, False]  # kept until processed
    assert len(desk.outbox()) == 1
    assert len(desk.unseen()) == 3  # nothing flagged before its commit

    monkeypatch.setattr(inbound, "handle_inbound", real)
    restarted = MailFrontend(desk.ctx)
    report = await restarted.process_once()

    assert report.stored == 0 and len(report.processed) == 2
    assert [r.status for r in desk.rows()] == ["processed"] * 3
    assert [desk.raw(r) for r in desk.rows()] == [None] * 3  # each raw mail went with its commit
    assert sorted(r.recipient for r in desk.outbox()) == ["s0@example.org", "s1@example.org", "s2@example.org"]
    assert desk.unseen() == []
    again = await restarted.process_once()
    assert again.processed == [] and len(desk.outbox()) == 3


async def test_unprocessable_mail_is_quarantined_not_lost(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    desk.deliver("no_message_id.eml")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("cannot make sense of it")

    monkeypatch.setattr(inbound, "read_stored", broken)
    await desk.frontend.process_once()

    [row] = desk.rows()
    assert row.status == "quarantined" and desk.raw(row) and "cannot make sense" in (row.error or "")
    assert desk.unseen() == []


@pytest.mark.process
async def test_serve_loop_idles_and_reconnects(desk: Desk) -> None:
    import asyncio

    await desk.frontend.start()
    try:
        desk.deliver("win1250_question.eml", sender="idle@example.org")
        await wait_until(lambda: len(desk.rows()) == 1 and desk.rows()[0].status == "processed")
        await asyncio.to_thread(desk.dovecot.restart)  # the connection dies under the reader
        desk.deliver("no_message_id.eml")
        await wait_until(lambda: len(desk.rows()) == 2 and desk.rows()[1].status == "processed", within=20)
    finally:
        await desk.frontend.stop()


async def wait_until(condition: Any, within: float = 10.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.1)
