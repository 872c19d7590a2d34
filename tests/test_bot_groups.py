"""Groups and channels get a short refusal; students are served only in private chats."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.storage.models import Conversation
from tests.bot_harness import STAFF_CHAT, bot_context, outbox_rows, running_bot, wait_until
from tests.servers.botapi import BotApiStandIn

pytestmark = pytest.mark.timeout(30)


async def test_group_and_channel_refused_staff_room_silent(api: BotApiStandIn, tmp_path: Path,
                                                           sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    async with running_bot(ctx):
        # People talking among themselves (the bot sees it with privacy mode off): no answer.
        for n in range(5):
            api.push_group_text(-100777, 5, f"ma ktoś notatki {n}?")
        await wait_until(lambda: api.updates_pending() == 0)
        # Something meant for the bot gets one refusal a day, however many there are.
        api.push_group_text(-100777, 5, f"@{api.bot_username} 12345678901 please help")
        api.push_group_text(-100777, 6, "/status")
        [refusal] = await api.await_messages(-100777, 1)
        assert refusal.plain_text == ctx.catalog.text("pl", "refuse_group")
        await wait_until(lambda: api.updates_pending() == 0 and not outbox_rows(ctx, status="pending"))
        assert len(outbox_rows(ctx, recipient="-100777")) == 1

        api.push_group_text(-100778, 6, "/start", language_code="en")
        [english] = await api.await_messages(-100778, 1)
        assert english.plain_text == ctx.catalog.text("en", "refuse_group")

        # A channel post: refused once, not once per post.
        for n in range(2):
            api.push_message(-100900, 7, text=f"post {n}", chat_type="channel")
        await api.await_messages(-100900, 1)
        await wait_until(lambda: api.updates_pending() == 0 and len(outbox_rows(ctx, recipient="-100900")) == 1)

        # Chatter in the staff room is neither refused nor a conversation.
        api.push_group_text(STAFF_CHAT, 8, "coffee anyone?")
        await wait_until(lambda: api.updates_pending() == 0)
        await wait_until(lambda: not outbox_rows(ctx, status="pending"))
    assert api.sent_messages(STAFF_CHAT) == []
    assert len(api.sent_messages(-100900)) == 1
    with Session(ctx.engine) as session:
        assert session.exec(select(Conversation)).all() == []  # no group message reached the engine
