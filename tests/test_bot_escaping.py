"""Names and texts with `_*[<&` reach Telegram escaped for HTML and read exactly as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.messaging.outbox import enqueue
from core.messaging.outgoing import OutgoingMessage
from core.storage.db import unit_of_work
from core.support import threads as support
from tests.bot_harness import STAFF_CHAT, bot_context, new_student, outbox_rows, running_bot, wait_until
from tests.servers.botapi import BotApiStandIn, check_html

pytestmark = pytest.mark.timeout(30)
NASTY = "Zo_ë *Ann* [x](y) <b>&amp; O'Brien & Co"


async def test_nasty_names_escaped(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    student, _ = new_student(ctx, first_name=NASTY, last_name="_Ł*[<&")
    with unit_of_work(ctx.engine) as session:
        support.open_thread(ctx, session, student_id=student.id, channel="telegram", account_id="8181",
                            text="Mój <kod> nie działa & co teraz?", language="pl", subject="_*[<&")
        enqueue(session, ctx.box, key="hello", channel="telegram", recipient="8181", kind="chat-reply",
                message=OutgoingMessage(text=f"Cześć, {NASTY}!"), now=ctx.clock.now())
    async with running_bot(ctx):
        await wait_until(lambda: all(r.status == "sent" for r in outbox_rows(ctx)), what="all sent")
    [escalation] = api.sent_messages(STAFF_CHAT)
    [hello] = api.sent_messages(8181)
    for message in (escalation, hello):
        assert message.parse_mode == "HTML"
        assert check_html(message.text or "") == message.plain_text  # Telegram accepts it
    assert f"{NASTY} _Ł*[<&" in (escalation.plain_text or "")
    assert "Mój <kod> nie działa & co teraz?" in (escalation.plain_text or "")
    assert hello.plain_text == f"Cześć, {NASTY}!"
