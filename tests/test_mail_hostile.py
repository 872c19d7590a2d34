"""Hostile inbound mail (issue 13, items 1 and 6): read in linear time, stopped at a limit, never a terminal's master.

Speed is not asserted here (bench/hostile_mail.py measures it). The pytest timeouts below
only turn a hang into a failure: before the fix, the 1 MB bodies took minutes (each was
quadratic), after it they take milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select
from typer.testing import CliRunner

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.cli import app
from core.conversation import Event
from core.storage.models import InboundMail, SupportMessage, SupportThread
from core.support.faq import Faq
from core.support.mail_text import question_text, strip_signature
from mail import frontend, guard, parse
from mail.frontend import MailFrontend
from mail.inbound import process_pending, store_raw
from tests.factories import TEST_SECRET
from tests.mail_samples.hostile import MB, escapes, html_bomb, many_lines
from tests.mail_samples.kit import mail_ctx
from tests.servers.dovecot import DovecotServer

# C0 but newline and tab, DEL, C1: what must never be stored or printed.
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.fixture
def ctx(tmp_path: Path, sqlite_url: str, clock: FixedClock) -> Iterator[AppContext]:
    context = mail_ctx(tmp_path, sqlite_url, clock, imap={"parse_timeout_seconds": 3})
    yield context
    context.engine.dispose()


def _store(ctx: AppContext, raw: bytes, uid: int) -> int:
    stored = store_raw(ctx, mailbox="INBOX", uidvalidity=1, uid=uid, raw=raw, size=len(raw))
    assert stored.inbound_id is not None
    return stored.inbound_id


def _rows(ctx: AppContext) -> dict[int, InboundMail]:
    with Session(ctx.engine) as session:
        return {row.id or 0: row for row in session.exec(select(InboundMail)).all()}


# --- linear, bounded text ------------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("unit", ["<style", "<", "<a", "<title "])
def test_a_megabyte_of_hostile_html_is_read_and_its_words_kept(unit: str) -> None:
    raw = html_bomb("ola@example.org", "pomoc@example.edu.pl", "T1", size=MB, unit=unit)
    facts = parse.parse_inbound(raw)
    assert facts.text.startswith("Pytanie T1")
    assert len(facts.text) <= parse.MAX_TEXT_CHARS


@pytest.mark.timeout(60)
def test_html_text_keeps_words_and_drops_css_scripts_comments_after_a_hostile_run() -> None:
    markup = ("<html><head><title>Tytuł</title><style>p { color: red }</style></head><body>"
              "<p>Nie dostałem</p><script>alert(1)</script><!-- ukryte --><div>maila&nbsp;z kodem</div>"
              'a&lt;b<br class="x">koniec <> i' + "<" * 300_000 + " zostaje")
    assert parse._html_text(markup) == "Nie dostałem\nmaila z kodem\na<b\nkoniec <> i" + "<" * 300_000 + " zostaje"


@pytest.mark.timeout(60)
def test_fifty_thousand_short_lines_are_read() -> None:
    raw = many_lines("ola@example.org", "pomoc@example.edu.pl", "T2")
    facts = parse.parse_inbound(raw)
    assert facts.text.count("\n") >= 49_900 and facts.attachments == ["dane.bin"]
    assert question_text(facts.subject, facts.text).startswith("Linie T2\nPytanie T2")
    # The signature rule still holds at the end of a long text.
    assert strip_signature("a\n" * 40_000 + "Pytanie?\nPozdrawiam,\nJan") == "a\n" * 40_000 + "Pytanie?"


@pytest.mark.timeout(60)
def test_one_huge_line_is_read() -> None:
    # The closing-formula pattern backtracked over the spaces twice: 8,000 of them took 3.7 s.
    line = "Regards" + " " * 90_000 + "1"
    assert strip_signature(f"Pytanie\n{line}") == f"Pytanie\n{line}"


# --- the time limit and the worker ------------------------------------------------------------

def spin_on_marked(raw: bytes, size: int | None, oversize: bool) -> Any:
    """Stands in for the reader in the worker: a mail marked SPIN never ends (pure Python, GIL held)."""
    if b"SPIN-FOREVER" in raw:
        while True:
            pass
    if b"DIE-NOW" in raw:
        os._exit(9)
    return guard._read(raw, size, oversize)


PLAIN = ("From: ola@example.org\r\nTo: pomoc@example.edu.pl\r\nSubject: {subject}\r\nMessage-ID: <{token}@example.org>"
         "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nNie dostałem maila z kodem. {token}\r\n")


def _plain(token: str, subject: str = "Kod") -> bytes:
    return PLAIN.format(token=token, subject=subject).encode()


@pytest.mark.timeout(120)
def test_a_mail_past_the_limit_is_quarantined_with_its_reason_once_and_serve_goes_on(
        ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "_read", spin_on_marked)
    spinning = _store(ctx, _plain("SPIN-FOREVER"), 1)
    dying = _store(ctx, _plain("DIE-NOW"), 2)
    ordinary = _store(ctx, _plain("ordinary"), 3)

    ticks = 0
    done = threading.Event()

    def other_front_end() -> None:  # pure Python beside the processing: it must keep running
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.01)

    ticker = threading.Thread(target=other_front_end)
    ticker.start()
    try:
        before = ticks
        processed = process_pending(ctx, Faq.load(ctx.settings.config_dir / "faq"))
        during = ticks - before
    finally:
        done.set()
        ticker.join()

    assert [(p.inbound_id, p.status) for p in processed] == [
        (spinning, "quarantined"), (dying, "quarantined"), (ordinary, "processed")]
    rows = _rows(ctx)
    assert "longer than 3 s" in (rows[spinning].error or "")
    assert "died (exit code 9)" in (rows[dying].error or "")
    assert during > 10  # the spinning mail held another process, not this one (3 s of it here)
    assert process_pending(ctx, Faq.load(ctx.settings.config_dir / "faq")) == []  # never retried


def test_a_worker_that_cannot_start_does_not_quarantine_the_mail(ctx: AppContext,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def no_worker() -> Any:
        raise BrokenProcessPool("cannot start a process here")

    monkeypatch.setattr(guard, "_started", no_worker)
    ordinary = _store(ctx, _plain("ordinary"), 1)
    [done] = process_pending(ctx, Faq.load(ctx.settings.config_dir / "faq"))
    assert (done.inbound_id, done.status) == (ordinary, "processed")  # read in this process instead


async def test_a_cycle_cut_off_by_its_deadline_does_not_start_a_second_pass(
        tmp_path: Path, sqlite_url: str, clock: FixedClock, dovecot: DovecotServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    address = dovecot.new_user(prefix="support")
    ctx = mail_ctx(tmp_path, sqlite_url, clock,
                   imap={"host": dovecot.host, "port": dovecot.imap_port, "security": "none",
                         "username": address, "password": dovecot.password})
    lock, running, peak, calls = threading.Lock(), 0, 0, 0
    second_entered = threading.Event()

    def slow_pass(*args: Any, **kwargs: Any) -> list[Any]:
        nonlocal running, peak, calls
        with lock:
            running, calls = running + 1, calls + 1
            peak = max(peak, running)
            if calls > 1:
                second_entered.set()
        second_entered.wait(5)  # the first pass runs until a second one starts (or 5 s)
        with lock:
            running -= 1
        return []

    monkeypatch.setattr(frontend, "process_pending", slow_pass)
    reader = MailFrontend(ctx)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.process_once(), 0.5)  # as _run cuts a cycle at its deadline
    await reader.process_once()
    assert calls == 2 and peak == 1
    ctx.engine.dispose()


# --- generated pathological MIME and HTML -----------------------------------------------------

_RUN_CHARS = st.sampled_from([*"<>&;#-!/ \n\t\"'=a\x1b\x9b", "<style", "<!--", "</style", "<br>", "&#", "-->",
                              "<div>", "=?utf-8?q?", "\u202e"])
_runs = st.lists(st.tuples(_RUN_CHARS, st.integers(1, 60_000)), min_size=1, max_size=6)


def _body(runs: list[tuple[str, int]]) -> str:
    return "".join(piece * count for piece, count in runs)[:400_000]


def _mime(runs: list[tuple[str, int]], depth: int, html: bool, header_runs: list[tuple[str, int]]) -> bytes:
    body = _body(runs)
    subtype = "html" if html else "plain"
    part = f"Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    for level in range(depth):  # nested multiparts, each wrapping the last
        part = (f'Content-Type: multipart/mixed; boundary="n{level}"\r\n\r\n--n{level}\r\n{part}'
                f"\r\n--n{level}--\r\n")
    huge = _body(header_runs).replace("\r", " ").replace("\n", " ")[:200_000]
    return (f"From: \"{huge[:5000]}\" <ola@example.org>\r\nSubject: {huge}\r\nX-Junk: {huge}\r\n"
            f"MIME-Version: 1.0\r\n{part}").encode("utf-8", "surrogatepass")


@pytest.mark.timeout(600)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(runs=_runs, depth=st.integers(0, 40), html=st.booleans(), header_runs=_runs)
def test_generated_pathological_mime_is_read_bounded_and_clean(runs: list[tuple[str, int]], depth: int, html: bool,
                                                              header_runs: list[tuple[str, int]]) -> None:
    facts = parse.parse_inbound(_mime(runs, depth, html, header_runs))
    assert len(facts.text) <= parse.MAX_TEXT_CHARS and len(facts.subject) <= 255
    for value in (facts.text, facts.subject, facts.sender_name, *facts.attachments):
        assert not CONTROLS.search(value), repr(value[:80])
    question_text(facts.subject, facts.text)


# --- control characters (item 6) ------------------------------------------------------------------

def test_control_characters_are_stripped_from_every_field_at_parse_time() -> None:
    facts = parse.parse_inbound(escapes("ola@example.org", "pomoc@example.edu.pl", "T3"))
    for value in (facts.sender_name, facts.subject, facts.text, facts.in_reply_to or ""):
        assert not CONTROLS.search(value), repr(value)
    assert facts.sender_name == "Jan[2J[8mhidden[0m]0;pwned31m"  # the visible rest stays for staff
    assert facts.subject.startswith("Pytanie T3")
    assert facts.text.splitlines()[1] == "Druga linia\tz tabulatorem."  # newline and tab kept


def test_chat_text_is_stripped_on_every_channel() -> None:
    assert Event.text_message("telegram", "1", "Cześć\x1b[2J\x9b\r\nświecie\x00").text == "Cześć[2J\nświecie"
    assert Event(kind="button", channel="console", account_id="1", text="menu:\x1b]0;x\x07status").text == (
        "menu:]0;xstatus")


@pytest.fixture
def runner(ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("MLEG_MODE", "production")
    monkeypatch.setenv("MLEG_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("MLEG_VAR_DIR", str(ctx.settings.var_dir))
    monkeypatch.setenv("MLEG_DATABASE_URL", ctx.settings.effective_database_url)
    return CliRunner()


def test_threads_show_and_list_never_print_escape_sequences(ctx: AppContext, runner: CliRunner) -> None:
    _store(ctx, escapes("ola@example.org", "pomoc@example.edu.pl", "T4"), 1)
    [done] = process_pending(ctx, Faq.load(ctx.settings.config_dir / "faq"))
    assert done.status == "processed"
    with Session(ctx.engine) as session:  # and a thread stored raw by an older version
        old = SupportThread(channel="telegram", account_id="7\x1b[8m", subject="stary\x1b]0;tytuł\x07",
                            language="pl", status="escalated", created_at=ctx.clock.now(), updated_at=ctx.clock.now())
        session.add(old)
        session.flush()
        session.add(SupportMessage(thread_id=old.id or 0, direction="in", author="7\x1b[2J", body="tekst\x1b[2J\x9b1m",
                                   created_at=ctx.clock.now()))
        session.commit()
        thread_ids = [t.id for t in session.exec(select(SupportThread)).all()]
    outputs = [runner.invoke(app, ["threads", "list"], catch_exceptions=False).output]
    outputs += [runner.invoke(app, ["threads", "show", str(n)], catch_exceptions=False).output for n in thread_ids]
    for output in outputs:
        assert "Pytanie T4" in outputs[0] and "stary" in outputs[0]
        assert not CONTROLS.search(output), repr(output)
