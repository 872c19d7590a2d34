"""A student who blocked the bot: Forbidden is recorded on the chat link, and not retried forever."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.messaging.outbox import enqueue
from core.messaging.outgoing import OutgoingMessage
from core.storage.db import unit_of_work
from core.storage.models import ChatLink
from tests.bot_harness import TgStudent, bot_context, new_student, outbox_rows, running_bot, wait_until
from tests.servers.botapi import BotApiStandIn

pytestmark = pytest.mark.timeout(30)


async def test_blocked_bot_recorded_and_given_up(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    student, _ = new_student(ctx)
    with unit_of_work(ctx.engine) as session:
        session.add(ChatLink(channel="telegram", account_id="5151", student_id=student.id or 0,
                             bound_at=ctx.clock.now()))
        enqueue(session, ctx.box, key="reminder:1", channel="telegram", recipient="5151", kind="reminder",
                message=OutgoingMessage(text="Twoja mLegitymacja wygasa za 3 dni."), now=ctx.clock.now())
    api.block_chat(5151)
    async with running_bot(ctx):
        [row] = await wait_until(lambda: [r for r in outbox_rows(ctx) if r.status == "failed"])
        assert "blocked" in (row.last_error or "") and row.body is None
        await asyncio.sleep(1.2)  # a drainer pass or two later: still one attempt
        assert [c.status for c in api.calls("sendMessage")] == [403]
        with Session(ctx.engine) as session:
            assert session.exec(select(ChatLink)).one().blocked_at is not None

        # The student unblocks and writes again: the next delivery clears the mark.
        api.block_chat(5151, blocked=False)
        await TgStudent(api, ctx, 5151).say("/start")
        with Session(ctx.engine) as session:
            assert session.exec(select(ChatLink)).one().blocked_at is None
