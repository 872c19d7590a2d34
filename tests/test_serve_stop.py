"""Stopping `mleg serve` while a delivery is in flight: its outcome is recorded before stop returns.

A message that reached Telegram (or the mail server) but was not recorded as sent would be
sent again after the restart: the student reads it twice.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from core.app import serve
from core.app.clock import SystemClock
from core.app.context import AppContext
from core.messaging import outbox
from core.messaging.outgoing import OutgoingMessage
from core.storage.db import make_engine, unit_of_work
from mail.channel import make_email_channel
from tests.bot_harness import bot_context, outbox_rows, running_bot
from tests.factories import SeededRandom, make_settings
from tests.servers.botapi import BotApiStandIn
from tests.servers.smtp_relay import SmtpRelay

pytestmark = [pytest.mark.timeout(30), pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")]
CHAT = 7272


async def test_stop_records_the_chat_reply_in_flight(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    api.delay_answers("sendMessage", 1.5)  # carried out at once, answered 1.5 s later
    async with running_bot(ctx):
        api.push_command(CHAT, CHAT, "/start")
        await api.await_messages(CHAT, 1)  # at Telegram; the answer is still on its way
    [row] = outbox_rows(ctx, channel="telegram")
    assert row.status == "sent"
    assert len(api.sent_messages(CHAT)) == 1


async def test_stop_hands_back_what_it_did_not_start(api: BotApiStandIn, tmp_path: Path, sqlite_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows claimed and not yet attempted when serve stops are pending again, due at once."""
    ctx = bot_context(tmp_path, sqlite_url, api)
    monkeypatch.setattr(serve, "STOP_GRACE_SECONDS", 5.0)
    api.delay_answers("sendMessage", 1.0)
    async with running_bot(ctx):
        with unit_of_work(ctx.engine) as session:
            for number in range(3):  # one chat: one after another, in order
                outbox.enqueue(session, ctx.box, key=f"stop:{number}", channel="telegram", recipient=str(CHAT),
                               kind="chat-reply", message=OutgoingMessage(text=f"part {number}"), now=ctx.clock.now())
        ctx.outbox_changed("telegram")
        await api.await_messages(CHAT, 1)
    rows = outbox_rows(ctx, channel="telegram")
    assert [r.status for r in rows] == ["sent", "pending", "pending"]
    assert all(r.attempts == 0 for r in rows[1:])  # never tried: no attempt counted against them
    assert len(api.sent_messages(CHAT)) == 1


async def test_stop_records_the_mail_in_flight_and_hands_back_the_rest(
        tmp_path: Path, sqlite_url: str, smtp_server: SmtpRelay) -> None:
    """The e-mail channel (one delivery at a time): the mail the server is accepting finishes and is
    recorded; the rows claimed with it and not started are pending again, due at once."""
    settings = make_settings(tmp_path, database_url=sqlite_url, smtp={
        "host": smtp_server.host, "port": smtp_server.port, "security": smtp_server.security,
        "sender": "mlegitymacja@uni.example.test"})
    ctx = AppContext(settings=settings, engine=make_engine(sqlite_url), clock=SystemClock(), random=SeededRandom())
    smtp_server.delay_answers(1.5)
    with unit_of_work(ctx.engine) as session:
        for number in range(3):
            outbox.enqueue(session, ctx.box, key=f"stop-mail:{number}", channel="email",
                           recipient=f"student{number}@student.example.edu.pl", kind="notice",
                           message=OutgoingMessage(subject="mLegitymacja", text=f"notice {number}"),
                           now=ctx.clock.now())
    server = serve.Server(ctx, run_jobs=False)
    with mock.patch.object(serve, "load_channels", lambda _ctx: {"email": make_email_channel(ctx)}), \
            mock.patch.object(serve, "load_frontends", lambda _ctx: []):
        await server.start()
    try:
        await smtp_server.wait_for_messages_async(1)  # accepted; the answer is still on its way
    finally:
        await server.stop()
    rows = outbox_rows(ctx, channel="email")
    assert [r.status for r in rows] == ["sent", "pending", "pending"]
    assert all(r.attempts == 0 for r in rows[1:])
    assert len(smtp_server.messages) == 1
