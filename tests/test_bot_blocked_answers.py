"""A staff answer to a student who blocked the bot: held and sent on unblock or the next message,
or e-mailed to a known student; my_chat_member (block/unblock) kept on the chat link.

Against the Bot API stand-in with the real python-telegram-bot Application (tests.bot_harness).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from core.app.context import AppContext
from core.messaging import sending
from core.messaging.outbox import open_body
from core.messaging.sending import DeliveryResult
from core.storage.db import unit_of_work
from core.storage.models import ChatLink, OutboxMessage
from core.support import answers
from tests.bot_harness import (
    GROUP_WAIT_SECONDS,
    STAFF_CHAT,
    TgStudent,
    bot_context,
    new_student,
    outbox_rows,
    running_bot,
    wait_until,
)
from tests.servers.botapi import BotApiStandIn
from tests.support.staff_room import (
    chat_link,
    mleg,
    open_thread,
    push_member_update,
    staff_reply,
    staff_texts,
    thread_actions,
)

pytestmark = pytest.mark.timeout(40)


# --- an answer to a student who blocked the bot -----------------------------------------------

async def test_answer_to_unknown_blocked_student_is_held_and_sent_on_unblock(
        api: BotApiStandIn, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody knows who the chat is (no e-mail to fall back on): staff are told, and the answer
    goes out when the student unblocks the bot."""
    ctx = bot_context(tmp_path, sqlite_url, api)
    api.block_chat(6161)
    async with running_bot(ctx):
        thread_id = open_thread(ctx, "6161", "Nie dostałem maila z kodem", student_id=None)
        await api.await_messages(STAFF_CHAT, 1, timeout=GROUP_WAIT_SECONDS)
        staff_reply(ctx, thread_id, "Sprawdź folder spam.")
        [failed] = await wait_until(lambda: outbox_rows(ctx, kind="support-answer", status="failed"))
        assert "blocked" in (failed.last_error or "")
        await wait_until(lambda: any(f"#{thread_id}" in t and "Telegram" in t for t in staff_texts(api)[1:]),
                         what="a note in the staff room")
        note = staff_texts(api)[-1]
        assert "zablokował" in note and "e-mail" in note  # says it waits, and why not by e-mail
        assert outbox_rows(ctx, channel="email") == []
        assert "thread.answer_undelivered" in thread_actions(ctx, thread_id)

        shown = mleg(ctx, monkeypatch, "threads", "show", str(thread_id))
        assert "failed" in shown and "blocked" in shown and "answer_undelivered" in shown
        history = json.loads(mleg(ctx, monkeypatch, "threads", "show", str(thread_id), "--json"))["history"]
        assert any(h["action"] == "thread.answer_undelivered" and h["detail"]["fallback"] == "held" for h in history)

        api.block_chat(6161, blocked=False)
        push_member_update(api, 6161, "kicked", "member")
        [answer] = await api.await_messages(6161, 1, timeout=8)
        assert "Sprawdź folder spam." in (answer.plain_text or "") and f"nr {thread_id}" in (answer.plain_text or "")
        await wait_until(lambda: "thread.answer_resent" in thread_actions(ctx, thread_id))
        push_member_update(api, 6161, "member", "member")  # a repeated signal sends nothing twice
        await wait_until(lambda: api.updates_pending() == 0)
        await wait_until(lambda: outbox_rows(ctx, channel="telegram", status="sent"))
        await wait_until(lambda: any("wrócił" in t for t in staff_texts(api)), what="staff told it went out")
    assert len(api.sent_messages(6161)) == 1


async def test_held_answer_goes_out_when_the_student_writes_again(
        api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    api.block_chat(6262)
    async with running_bot(ctx):
        thread_id = open_thread(ctx, "6262", "Zgubiłem telefon", student_id=None)
        staff_reply(ctx, thread_id, "Unieważnij ją komendą /revoke.")
        await wait_until(lambda: outbox_rows(ctx, kind="support-answer", status="failed"))

        # Unblocking in Telegram and writing: no my_chat_member update reaches us here.
        api.block_chat(6262, blocked=False)
        student = TgStudent(api, ctx, 6262)
        await student.say("/start")
        await wait_until(lambda: any("/revoke" in (m.plain_text or "") for m in api.sent_messages(6262)),
                         timeout=8, what="the held answer delivered")
        await wait_until(lambda: len(outbox_rows(ctx, kind="support-answer", status="sent")) == 1)
        await student.say("/help")  # later deliveries do not send it again
    assert sum("/revoke." in (m.plain_text or "") for m in api.sent_messages(6262)) == 1


async def test_answer_to_known_blocked_student_goes_to_the_university_email(
        api: BotApiStandIn, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    student, _ = new_student(ctx)
    with unit_of_work(ctx.engine) as session:
        session.add(ChatLink(channel="telegram", account_id="6363", student_id=student.id or 0,
                             bound_at=ctx.clock.now()))
    api.block_chat(6363)
    async with running_bot(ctx):
        thread_id = open_thread(ctx, "6363", "Kiedy przedłużenie?", student_id=student.id)
        staff_reply(ctx, thread_id, "Od 1 października.")
        [mail] = await wait_until(lambda: outbox_rows(ctx, channel="email", kind="support-answer"))
        assert mail.recipient == student.email and mail.thread_id == thread_id
        body = open_body(ctx.box, mail)
        assert "Od 1 października." in body.text and f"[MLEG-{thread_id}]" in (body.subject or "")
        await wait_until(lambda: any(f"#{thread_id}" in t and "e-mail" in t for t in staff_texts(api)[1:]),
                         what="a note in the staff room")
        assert chat_link(ctx, "6363").blocked_at is not None  # type: ignore[union-attr]
        shown = json.loads(mleg(ctx, monkeypatch, "threads", "show", str(thread_id), "--json"))
        assert any(h["action"] == "thread.answer_undelivered" and h["detail"]["fallback"] == "email"
                   for h in shown["history"])
        [refused] = [d for d in shown["deliveries"] if d["channel"] == "telegram"]
        assert refused["status"] == "failed" and "e-mailed instead" in refused["error"]

        # Already e-mailed: coming back to the chat does not bring a second copy.
        api.block_chat(6363, blocked=False)
        push_member_update(api, 6363, "kicked", "member")
        await wait_until(lambda: chat_link(ctx, "6363").blocked_at is None)  # type: ignore[union-attr]
        await wait_until(lambda: outbox_rows(ctx, channel="staff", status="pending") == [])
    assert api.sent_messages(6363) == []
    assert len(outbox_rows(ctx, channel="email", kind="support-answer")) == 1


def test_refused_answer_held_then_resent_once(ctx: AppContext) -> None:
    """core.support.threads without Telegram, on both databases: held, resent once, refused again, held again."""
    thread_id = open_thread(ctx, "4242", "Pytanie", student_id=None)
    staff_reply(ctx, thread_id, "Odpowiedź.")

    def refuse(kind: str = "support-answer") -> int:
        [row] = sending.claim(ctx.engine, channel="telegram", now=ctx.clock.now())
        with unit_of_work(ctx.engine) as session:
            note = answers.answer_undelivered(ctx, session, row, reason="bot was blocked by the user")
        assert note == answers.HELD_NOTE
        sending.record(ctx.engine, row, DeliveryResult(ok=False, permanent=True, error=f"Forbidden: x; {note}"),
                      ctx.clock.now())
        return row.id or 0

    first = refuse()
    with unit_of_work(ctx.engine) as session:
        [again] = answers.resend_held_answers(ctx, session, channel="telegram", account_id="4242")
        assert "Odpowiedź." in open_body(ctx.box, again).text
    with unit_of_work(ctx.engine) as session:  # the same return seen twice: nothing more
        assert answers.resend_held_answers(ctx, session, channel="telegram", account_id="4242") == []
    [old] = outbox_rows(ctx, id=first)
    assert f"re-sent as outbox #{again.id}" in (old.last_error or "")

    refuse()  # blocked again before the resend went out
    with unit_of_work(ctx.engine) as session:
        [third] = answers.resend_held_answers(ctx, session, channel="telegram", account_id="4242")
    assert third.id != again.id
    assert thread_actions(ctx, thread_id).count("thread.answer_resent") == 2
    reminder = OutboxMessage(idempotency_key="reminder:1", channel="telegram", recipient="4242", kind="reminder")
    with unit_of_work(ctx.engine) as session:  # other rows are not answers: left alone
        assert answers.answer_undelivered(ctx, session, reminder, reason="x") is None


# --- my_chat_member ---------------------------------------------------------------------------

async def test_my_chat_member_block_and_unblock(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    student, _ = new_student(ctx)
    with unit_of_work(ctx.engine) as session:
        session.add(ChatLink(channel="telegram", account_id="7171", student_id=student.id or 0,
                             bound_at=ctx.clock.now()))
    async with running_bot(ctx):
        push_member_update(api, 7171, "member", "kicked")
        await wait_until(lambda: chat_link(ctx, "7171").blocked_at is not None, what="blocked_at set")  # type: ignore[union-attr]
        push_member_update(api, 7171, "kicked", "member")
        await wait_until(lambda: chat_link(ctx, "7171").blocked_at is None, what="blocked_at cleared")  # type: ignore[union-attr]
        # A group the bot is removed from is not a student: nothing breaks, nothing is marked.
        api.push_update({"my_chat_member": {
            "chat": {"id": -100777, "type": "supergroup", "title": "Inna grupa"},
            "from": {"id": 9, "is_bot": False, "first_name": "Ktoś"}, "date": int(time.time()),
            "old_chat_member": {"status": "member", "user": api.bot_user()},
            "new_chat_member": {"status": "left", "user": api.bot_user()},
        }})
        await wait_until(lambda: api.updates_pending() == 0)
    assert api.sent_messages(7171) == []
