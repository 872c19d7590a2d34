"""End to end (issue 13, item 1): hostile mails into a real Dovecot while a student chats with `mleg serve`.

`mleg serve` runs as a subprocess with both front-ends: the support mailbox on the session's
Dovecot and the bot on the Bot API stand-in. Two 1 MB hostile mails (an HTML part of
`<style` repeated, and 50,000 short lines) and then an ordinary question are delivered;
meanwhile a student keeps chatting. The observable is the issue's acceptance: every reply of
the bot comes within 2 s of the student's message while the mails are read (before the fix
the first mail held the interpreter for about ten minutes), the ordinary question behind the
hostile ones is answered, and each hostile mail ends answered or quarantined with its reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.app.context import AppContext
from core.app.settings import PROJECT_ROOT
from core.storage.db import make_engine
from core.storage.models import InboundMail, OutboxMessage
from tests.bot_harness import STAFF_CHAT, TgStudent
from tests.factories import TEST_SECRET, make_settings
from tests.mail_samples.hostile import html_bomb, many_lines
from tests.mail_samples.kit import sample
from tests.servers.botapi import BotApiStandIn
from tests.servers.dovecot import DovecotServer
from tests.servers.ports import free_port

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]
STUDENT_CHAT = 42424
# The acceptance: the student's replies keep coming within this many seconds.
MAX_GAP = 2.0
# Exchanges the student has at least, and at least this long after the mails arrive.
MIN_EXCHANGES = 8


def _mleg(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "core.cli", *args], env=env, cwd=PROJECT_ROOT, check=True,
                   capture_output=True, timeout=120)


def _serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "core.cli", "serve", "--no-jobs"], env=env,
                                cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)


def _mails(ctx: AppContext) -> dict[str, InboundMail]:
    with Session(ctx.engine) as session:
        return {row.message_id or "": row for row in session.exec(select(InboundMail)).all()}


def _answers_to(ctx: AppContext, recipient: str) -> list[OutboxMessage]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(OutboxMessage).where(OutboxMessage.channel == "email",
                                                             OutboxMessage.recipient == recipient)).all())


async def test_hostile_mails_do_not_stall_the_chat_and_the_question_behind_them_is_answered(
        api: BotApiStandIn, dovecot: DovecotServer, tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    support = dovecot.new_user(prefix="support")
    api.add_chat(STAFF_CHAT, chat_type="supergroup", title="Biuro")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLEG_")},
           "MLEG_MODE": "production", "MLEG_SECRET_KEY": TEST_SECRET,
           "MLEG_DATABASE_URL": f"sqlite:///{db}", "MLEG_VAR_DIR": str(tmp_path / "var"),
           "MLEG_TELEGRAM__TOKEN": api.token, "MLEG_TELEGRAM__API_BASE_URL": api.base_url,
           "MLEG_TELEGRAM__STAFF_CHAT_ID": str(STAFF_CHAT),
           "MLEG_TELEGRAM__MESSAGES_PER_CHAT_PER_SECOND": "100",
           "MLEG_IMAP__HOST": dovecot.host, "MLEG_IMAP__PORT": str(dovecot.imap_port),
           "MLEG_IMAP__SECURITY": "none", "MLEG_IMAP__USERNAME": support,
           "MLEG_IMAP__PASSWORD": dovecot.password, "MLEG_IMAP__POLL_INTERVAL_SECONDS": "1",
           "MLEG_IMAP__IDLE_TIMEOUT_SECONDS": "5", "MLEG_UNIVERSITY__HELP_DESK_EMAIL": support,
           # Answers stay queued (nothing listens there): what was answered is in the outbox.
           "MLEG_SMTP__HOST": "127.0.0.1", "MLEG_SMTP__PORT": str(free_port()), "MLEG_SMTP__SECURITY": "none"}
    log = tmp_path / "serve.log"
    _mleg(env, "db", "upgrade")
    ctx = AppContext(settings=make_settings(tmp_path, database_url=f"sqlite:///{db}"),
                     engine=make_engine(f"sqlite:///{db}"))
    student = TgStudent(api, ctx, STUDENT_CHAT)
    proc = _serve(env, log)
    try:
        await api.await_calls("deleteWebhook", 1, timeout=60)
        await student.say("/start")  # warmed up: the first reply sets things up
        await student.say("/help")

        asker = "ola.nowak@example.org"
        dovecot.deliver(support, html_bomb("bomb@example.org", support, "H1"), mail_from="bomb@example.org")
        dovecot.deliver(support, many_lines("lines@example.org", support, "L1"), mail_from="lines@example.org")
        dovecot.deliver(support, sample("win1250_question.eml", sender=asker, support=support, n="Q1"),
                        mail_from=asker)
        wanted = {"<html-H1@example.org>", "<lines-L1@example.org>", "<win1250-Q1@poczta.example.pl>"}

        gaps: list[float] = []
        deadline = time.monotonic() + 150
        while True:
            rows = _mails(ctx)
            settled = wanted <= set(rows) and all(rows[m].status != "new" for m in wanted)
            if (settled and len(gaps) >= MIN_EXCHANGES) or time.monotonic() > deadline:
                break
            started = time.monotonic()
            try:
                await student.say("/help")  # waits (up to 5 s) until the reply is out
            except TimeoutError:
                gaps.append(time.monotonic() - started)
                break  # the chat stalled: that is the failure, no need to wait for more
            gaps.append(time.monotonic() - started)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    rows = _mails(ctx)
    print(f"\nreply gaps (s): {' '.join(f'{g:.2f}' for g in gaps)}")
    print("\n".join(f"{m}: {rows[m].status} ({rows[m].error})" for m in sorted(wanted) if m in rows))
    assert len(gaps) >= MIN_EXCHANGES and max(gaps) < MAX_GAP, gaps
    assert wanted <= set(rows), sorted(rows)
    question = rows["<win1250-Q1@poczta.example.pl>"]
    assert question.status == "processed" and question.error == "answered from the FAQ (email_not_arrived)"
    assert [a.kind for a in _answers_to(ctx, asker)] == ["mail-answer"]
    for message_id in ("<html-H1@example.org>", "<lines-L1@example.org>"):
        hostile = rows[message_id]
        assert hostile.status in ("processed", "quarantined") and hostile.error, (message_id, hostile.status)
    ctx.engine.dispose()
