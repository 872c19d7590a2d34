"""The staff room keeps what is internal internal: removed members lose their rights at once,
a public staff chat gets nothing, and staff can write notes that never reach the student."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.app.context import AppContext
from core.storage.db import unit_of_work
from core.storage.models import AuditEvent, SupportMessage, SupportThread
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
from tests.support.staff_room import escalate

pytestmark = pytest.mark.timeout(60)
STAFF = 501


def _thread(ctx: AppContext, thread_id: int) -> SupportThread:
    with Session(ctx.engine) as session:
        thread = session.get(SupportThread, thread_id)
        assert thread is not None
        return thread


def _refusals(ctx: AppContext) -> list[AuditEvent]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == "staff.refused")).all())


def _member_update(api: BotApiStandIn, user_id: int, old: str, new: str) -> None:
    user = {"id": user_id, "is_bot": False, "first_name": "Ewa"}
    api.push_update({"chat_member": {
        "chat": {"id": STAFF_CHAT, "type": "supergroup", "title": "Biuro"},
        "from": {"id": 1, "is_bot": False, "first_name": "Admin"}, "date": 1790000000,
        "old_chat_member": {"status": old, "user": user},
        "new_chat_member": {"status": new, "user": user},
    }})


@pytest.mark.parametrize("how", ["chat_member", "left_chat_member"])
async def test_a_removed_member_is_refused_at_once(api: BotApiStandIn, tmp_path: Path, sqlite_url: str,
                                                   how: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    api.set_member_status(STAFF_CHAT, STAFF, "member")
    async with running_bot(ctx):
        first = escalate(ctx, "9191", "Nie dostałem maila z kodem")
        second = escalate(ctx, "9292", "Zgubiłem telefon")
        await api.await_messages(STAFF_CHAT, 2, timeout=GROUP_WAIT_SECONDS)
        api.push_group_text(STAFF_CHAT, STAFF, f"/claim {first}")
        await wait_until(lambda: _thread(ctx, first).status == "claimed", what="claimed while a member")

        # Removed from the staff group; Telegram tells the bot.
        api.set_member_status(STAFF_CHAT, STAFF, "left")
        if how == "chat_member":
            _member_update(api, STAFF, "member", "left")
        else:
            api.push_message(STAFF_CHAT, 1, chat_type="supergroup",
                             extra={"left_chat_member": {"id": STAFF, "is_bot": False, "first_name": "Ewa"}})
        api.push_group_text(STAFF_CHAT, STAFF, f"/close {second}")
        await wait_until(lambda: _refusals(ctx), what="the removed member refused")
        assert _thread(ctx, second).status == "escalated"


async def test_a_public_staff_chat_gets_no_escalations(api: BotApiStandIn, tmp_path: Path, sqlite_url: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    api.add_chat(STAFF_CHAT, username="biuro_mlegitymacji")  # a public link: anyone can read it
    caplog.set_level(logging.ERROR, logger="bot.staff_room")
    async with running_bot(ctx):
        thread_id = escalate(ctx, "9191", "Mój PESEL nie przechodzi, pomocy")
        [row] = await wait_until(lambda: [r for r in outbox_rows(ctx, channel="staff", thread_id=thread_id)
                                          if "public" in (r.last_error or "")], what="the refusal recorded")
        assert row.status == "pending"  # waits for a private chat, not given up
        assert "@biuro_mlegitymacji" in (row.last_error or "")
    assert api.sent_messages(STAFF_CHAT) == []
    assert api.calls("sendMessage") == []
    assert any("staff chat is public" in r.getMessage() for r in caplog.records)


async def test_notes_and_hash_chatter_stay_internal(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    api.make_forum(STAFF_CHAT)
    api.set_member_status(STAFF_CHAT, STAFF, "administrator")
    async with running_bot(ctx):
        thread_id = escalate(ctx, "9292", "Zgubiłem telefon")
        await api.await_messages(STAFF_CHAT, 1, timeout=GROUP_WAIT_SECONDS)
        topic = await wait_until(lambda: _thread(ctx, thread_id).staff_topic_id)

        api.push_group_text(STAFF_CHAT, STAFF, "# to ten sam co wczoraj? sprawdzę w USOS", message_thread_id=topic)
        api.push_group_text(STAFF_CHAT, STAFF, "/note dzwonił też na infolinię", message_thread_id=topic)
        api.push_group_text(STAFF_CHAT, STAFF, "/help", message_thread_id=topic)
        api.push_group_text(STAFF_CHAT, STAFF, "/status", message_thread_id=topic)
        api.push_group_text(STAFF_CHAT, STAFF, "/poll@some_other_bot Kto dyżuruje?", message_thread_id=topic)
        api.push_group_text(STAFF_CHAT, STAFF, f"/note {thread_id} drugi wpis spoza wątku")
        # What staff meant for the student still goes to the student, after all that.
        api.push_group_text(STAFF_CHAT, STAFF, "Unieważnij ją komendą /revoke.", message_thread_id=topic)
        [answer] = await api.await_messages(9292, 1)
        assert "/revoke" in (answer.plain_text or "")

        await api.await_messages(STAFF_CHAT, 6, timeout=GROUP_WAIT_SECONDS)
        await wait_until(lambda: all(r.status == "sent" for r in outbox_rows(ctx, channel="staff")),
                         timeout=GROUP_WAIT_SECONDS, what="every staff-room row sent")
        texts = [m.plain_text or "" for m in api.sent_messages(STAFF_CHAT)]
        assert len(texts) == 6  # the escalation, /help, one usage (for /status), two notes, "answered"
        assert ctx.catalog.text("pl", "bot.staff.help") in texts
        assert ctx.catalog.text("pl", "bot.staff.usage") in texts
        assert texts.count(ctx.catalog.text("pl", "bot.staff.noted", thread=thread_id)) == 2
    assert len(api.sent_messages(9292)) == 1  # only the answer reached the student
    with Session(ctx.engine) as session:
        notes = session.exec(select(SupportMessage).where(SupportMessage.thread_id == thread_id,
                                                          SupportMessage.direction == "note")).all()
    assert [n.body for n in notes] == ["dzwonił też na infolinię", "drugi wpis spoza wątku"]
    assert all("501" in n.author for n in notes)


async def test_an_unproven_mail_is_marked_in_the_staff_room(api: BotApiStandIn, tmp_path: Path,
                                                            sqlite_url: str) -> None:
    """A mail in a student's name that the mail server did not prove: its topic and post say so."""
    ctx = bot_context(tmp_path, sqlite_url, api)
    api.make_forum(STAFF_CHAT)
    student, _ = new_student(ctx)
    with unit_of_work(ctx.engine) as session:
        thread = support.open_thread(ctx, session, student_id=student.id, channel="email", account_id=student.email,
                                     text="Proszę unieważnić moją legitymację.", language="pl",
                                     subject="Unieważnienie", sender_verified=False)
    async with running_bot(ctx):
        ctx.outbox_changed("staff")
        [posted] = await api.await_messages(STAFF_CHAT, 1, timeout=GROUP_WAIT_SECONDS)
    [topic] = api.forum_topics(STAFF_CHAT).values()
    assert topic["name"] == f"⚠ #{thread.id} Unieważnienie"
    text = posted.plain_text or ""
    assert text.index("NADAWCA NIEPOTWIERDZONY") < text.index("Proszę unieważnić") and student.email in text
