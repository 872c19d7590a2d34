"""The staff room: escalations posted, a staff reply reaches the student, /claim, /close and buttons."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import support
from core.context import AppContext
from core.db import unit_of_work
from core.models import SupportThread
from tests.bot_harness import (
    GROUP_WAIT_SECONDS,
    STAFF_CHAT,
    bot_context,
    new_student,
    outbox_rows,
    running_bot,
    wait_until,
)
from tests.servers.botapi import BotApiStandIn

pytestmark = pytest.mark.timeout(30)
STAFF = 501


def _escalate(ctx: AppContext, account: str, text: str) -> int:
    """What the engine does when a student asks for the help desk."""
    student, _ = new_student(ctx)
    with unit_of_work(ctx.engine) as session:
        thread = support.open_thread(ctx, session, student_id=student.id, channel="telegram", account_id=account,
                                     text=text, language="pl", subject=text[:40])
    ctx.outbox_changed("staff")
    return thread.id or 0


def _thread(ctx: AppContext, thread_id: int) -> SupportThread:
    with unit_of_work(ctx.engine) as session:
        return support.get_thread(session, thread_id)


async def test_reply_claim_close_in_a_plain_group(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    api.set_member_status(STAFF_CHAT, STAFF, "member")
    async with running_bot(ctx):
        thread_id = _escalate(ctx, "9191", "Nie dostałem maila z kodem")
        [posted] = await api.await_messages(STAFF_CHAT, 1, timeout=GROUP_WAIT_SECONDS)
        assert f"#{thread_id}" in (posted.plain_text or "") and "Nie dostałem maila" in (posted.plain_text or "")
        assert posted.callback_data("/claim") == f"staff:claim:{thread_id}"
        await wait_until(lambda: _thread(ctx, thread_id).staff_message_ref == str(posted.message_id))
        await wait_until(lambda: outbox_rows(ctx, channel="staff", status="sent"))  # its id is on record

        api.push_group_text(STAFF_CHAT, STAFF, f"/claim {thread_id}", first_name="Ewa")
        [_, claimed] = await api.await_messages(STAFF_CHAT, 2, timeout=GROUP_WAIT_SECONDS)
        assert claimed.reply_to_message_id == posted.message_id  # notes about a thread hang under it
        await wait_until(lambda: _thread(ctx, thread_id).status == "claimed")
        assert "501" in (_thread(ctx, thread_id).claimed_by or "")

        api.push_group_text(STAFF_CHAT, STAFF, "Sprawdź folder spam, wysłaliśmy ponownie.",
                            reply_to_message_id=posted.message_id)
        [answer] = await api.await_messages(9191, 1)
        assert "Sprawdź folder spam" in (answer.plain_text or "") and f"nr {thread_id}" in (answer.plain_text or "")
        await wait_until(lambda: _thread(ctx, thread_id).status == "answered")

        api.push_callback(STAFF_CHAT, STAFF, f"staff:close:{thread_id}", posted.message_id)
        await wait_until(lambda: _thread(ctx, thread_id).status == "closed")
        assert all(c.ok for c in api.calls("answerCallbackQuery"))

        api.push_group_text(STAFF_CHAT, STAFF, "/claim 999")
        [*_, missing] = await api.await_messages(STAFF_CHAT, 5, timeout=GROUP_WAIT_SECONDS)
        assert "999" in (missing.plain_text or "")

        api.push_group_text(STAFF_CHAT, STAFF, "/claim abc")  # a typo gets the usage, not silence
        [*_, usage] = await api.await_messages(STAFF_CHAT, 6, timeout=GROUP_WAIT_SECONDS)
        assert usage.plain_text == ctx.catalog.text("pl", "bot.staff.usage")
    assert len(api.sent_messages(9191)) == 1  # the student got the answer once


async def test_forum_topic_per_thread(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    api.make_forum(STAFF_CHAT)
    api.set_member_status(STAFF_CHAT, STAFF, "administrator")
    async with running_bot(ctx):
        first = _escalate(ctx, "9292", "Zgubiłem telefon")
        second = _escalate(ctx, "9393", "Nowy semestr")
        await api.await_messages(STAFF_CHAT, 2, timeout=GROUP_WAIT_SECONDS)
        topics = api.forum_topics(STAFF_CHAT)
        assert sorted(t["name"] for t in topics.values()) == [f"#{first} Zgubiłem telefon", f"#{second} Nowy semestr"]
        topic = await wait_until(lambda: _thread(ctx, first).staff_topic_id)
        assert topic in topics and api.sent_messages(STAFF_CHAT)[0].message_thread_id == topic

        # Writing in the topic answers that thread; /close there needs no number.
        api.push_group_text(STAFF_CHAT, STAFF, "Unieważnij ją komendą /revoke.", message_thread_id=topic)
        [answer] = await api.await_messages(9292, 1)
        assert "/revoke" in (answer.plain_text or "")
        api.push_group_text(STAFF_CHAT, STAFF, "/close", message_thread_id=topic)
        await wait_until(lambda: _thread(ctx, first).status == "closed")
    assert api.sent_messages(9393) == []
    assert all(m.message_thread_id is not None for m in api.sent_messages(STAFF_CHAT))
