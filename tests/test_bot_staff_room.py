"""The staff room: escalations posted, a staff reply reaches the student, /claim, /close and buttons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.app.context import AppContext
from core.storage.db import unit_of_work
from core.support import threads as support
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
from tests.support.staff_room import (
    escalate,
    mleg,
    open_thread,
    thread,
    thread_actions,
)

pytestmark = pytest.mark.timeout(30)
STAFF = 501
EWA, PIOTR = STAFF, 502  # two colleagues in the staff room


async def test_reply_claim_close_in_a_plain_group(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    api.set_member_status(STAFF_CHAT, STAFF, "member")
    async with running_bot(ctx):
        thread_id = escalate(ctx, "9191", "Nie dostałem maila z kodem")
        [posted] = await api.await_messages(STAFF_CHAT, 1, timeout=GROUP_WAIT_SECONDS)
        assert f"#{thread_id}" in (posted.plain_text or "") and "Nie dostałem maila" in (posted.plain_text or "")
        assert posted.callback_data("/claim") == f"staff:claim:{thread_id}"
        await wait_until(lambda: thread(ctx, thread_id).staff_message_ref == str(posted.message_id))
        await wait_until(lambda: outbox_rows(ctx, channel="staff", status="sent"))  # its id is on record

        api.push_group_text(STAFF_CHAT, STAFF, f"/claim {thread_id}", first_name="Ewa")
        [_, claimed] = await api.await_messages(STAFF_CHAT, 2, timeout=GROUP_WAIT_SECONDS)
        assert claimed.reply_to_message_id == posted.message_id  # notes about a thread hang under it
        await wait_until(lambda: thread(ctx, thread_id).status == "claimed")
        assert "501" in (thread(ctx, thread_id).claimed_by or "")

        api.push_group_text(STAFF_CHAT, STAFF, "Sprawdź folder spam, wysłaliśmy ponownie.",
                            reply_to_message_id=posted.message_id)
        [answer] = await api.await_messages(9191, 1)
        assert "Sprawdź folder spam" in (answer.plain_text or "") and f"nr {thread_id}" in (answer.plain_text or "")
        await wait_until(lambda: thread(ctx, thread_id).status == "answered")

        api.push_callback(STAFF_CHAT, STAFF, f"staff:close:{thread_id}", posted.message_id)
        await wait_until(lambda: thread(ctx, thread_id).status == "closed")
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
        first = escalate(ctx, "9292", "Zgubiłem telefon")
        second = escalate(ctx, "9393", "Nowy semestr")
        await api.await_messages(STAFF_CHAT, 2, timeout=GROUP_WAIT_SECONDS)
        topics = api.forum_topics(STAFF_CHAT)
        assert sorted(t["name"] for t in topics.values()) == [f"#{first} Zgubiłem telefon", f"#{second} Nowy semestr"]
        topic = await wait_until(lambda: thread(ctx, first).staff_topic_id)
        assert topic in topics and api.sent_messages(STAFF_CHAT)[0].message_thread_id == topic

        # Writing in the topic answers that thread; /close there needs no number.
        api.push_group_text(STAFF_CHAT, STAFF, "Unieważnij ją komendą /revoke.", message_thread_id=topic)
        [answer] = await api.await_messages(9292, 1)
        assert "/revoke" in (answer.plain_text or "")
        api.push_group_text(STAFF_CHAT, STAFF, "/close", message_thread_id=topic)
        await wait_until(lambda: thread(ctx, first).status == "closed")
    assert api.sent_messages(9393) == []
    assert all(m.message_thread_id is not None for m in api.sent_messages(STAFF_CHAT))


# --- /claim of a thread a colleague holds -----------------------------------------------------

async def test_claim_of_a_claimed_thread_asks_to_confirm(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    api.set_member_status(STAFF_CHAT, EWA, "member")
    api.set_member_status(STAFF_CHAT, PIOTR, "member")
    student, _ = new_student(ctx)
    async with running_bot(ctx):
        thread_id = open_thread(ctx, "8181", "Nowy semestr", student_id=student.id)
        [posted] = await api.await_messages(STAFF_CHAT, 1, timeout=GROUP_WAIT_SECONDS)
        api.push_group_text(STAFF_CHAT, EWA, f"/claim {thread_id}", first_name="Ewa")
        await wait_until(lambda: "501" in (thread(ctx, thread_id).claimed_by or ""))

        api.push_group_text(STAFF_CHAT, PIOTR, f"/claim {thread_id}", first_name="Piotr")
        [*_, asked] = await api.await_messages(STAFF_CHAT, 3, timeout=GROUP_WAIT_SECONDS)
        assert "Ewa (501)" in (asked.plain_text or "") and f"/claim {thread_id} force" in (asked.plain_text or "")
        assert asked.callback_data(f"#{thread_id}") == f"staff:takeover:{thread_id}"
        assert "501" in (thread(ctx, thread_id).claimed_by or "")  # not taken silently

        api.push_group_text(STAFF_CHAT, PIOTR, f"/claim {thread_id} force", first_name="Piotr")
        await wait_until(lambda: "502" in (thread(ctx, thread_id).claimed_by or ""))
        [*_, taken] = await api.await_messages(STAFF_CHAT, 4, timeout=GROUP_WAIT_SECONDS)
        assert "Piotr" in (taken.plain_text or "") and "Ewa (501)" in (taken.plain_text or "")

        # The button works the same way, for Ewa taking it back.
        api.push_callback(STAFF_CHAT, EWA, f"staff:takeover:{thread_id}", asked.message_id, first_name="Ewa")
        await wait_until(lambda: "501" in (thread(ctx, thread_id).claimed_by or ""))
        # Claiming what one already holds is no take-over.
        api.push_group_text(STAFF_CHAT, EWA, f"/claim {thread_id}", first_name="Ewa")
        await api.await_messages(STAFF_CHAT, 6, timeout=GROUP_WAIT_SECONDS)
        # Nor is pressing the escalation's /claim button on a thread someone else holds.
        api.push_callback(STAFF_CHAT, PIOTR, f"staff:claim:{thread_id}", posted.message_id, first_name="Piotr")
        [*_, again] = await api.await_messages(STAFF_CHAT, 7, timeout=GROUP_WAIT_SECONDS)
        assert "Ewa (501)" in (again.plain_text or "")
    assert "501" in (thread(ctx, thread_id).claimed_by or "")
    assert thread_actions(ctx, thread_id).count("thread.taken_over") == 2
    assert thread_actions(ctx, thread_id).count("thread.claimed") == 2


def test_claim_thread_refuses_a_silent_take_over(ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    thread_id = open_thread(ctx, "9191", "Pytanie", student_id=None)
    with unit_of_work(ctx.engine) as session:
        support.claim_thread(ctx, session, thread_id, staff="ewa")
    with pytest.raises(support.ThreadClaimed) as refused, unit_of_work(ctx.engine) as session:
        support.claim_thread(ctx, session, thread_id, staff="piotr")
    assert refused.value.holder == "ewa"
    assert thread(ctx, thread_id).claimed_by == "ewa"
    with unit_of_work(ctx.engine) as session:
        support.claim_thread(ctx, session, thread_id, staff="ewa")  # one's own: fine
        support.claim_thread(ctx, session, thread_id, staff="piotr", force=True)
    assert thread(ctx, thread_id).claimed_by == "piotr"
    assert thread_actions(ctx, thread_id)[-1] == "thread.taken_over"

    shown = json.loads(mleg(ctx, monkeypatch, "threads", "show", str(thread_id), "--json"))
    [taken] = [h for h in shown["history"] if h["action"] == "thread.taken_over"]
    assert taken["actor"] == "staff:piotr" and taken["detail"] == {"previous": "ewa"}
    assert "taken_over" in mleg(ctx, monkeypatch, "threads", "show", str(thread_id))
