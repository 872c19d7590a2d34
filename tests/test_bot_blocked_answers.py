"""Staff follow-ups: an answer to a student who blocked the bot, my_chat_member (block/unblock),
and /claim of a thread a colleague already holds.

Against the Bot API stand-in with the real python-telegram-bot Application (tests.bot_harness).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from core import outbox, support
from core.cli import app
from core.context import AppContext
from core.db import unit_of_work
from core.models import AuditEvent, ChatLink, OutboxMessage, SupportThread
from core.outbox import DeliveryResult, open_body
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
from tests.factories import TEST_SECRET
from tests.servers.botapi import BotApiStandIn

pytestmark = pytest.mark.timeout(40)
EWA, PIOTR = 501, 502


# --- helpers ---------------------------------------------------------------------------------

def _open(ctx: AppContext, account: str, text: str, *, student_id: int | None) -> int:
    """What the engine does when a student asks for the help desk."""
    with unit_of_work(ctx.engine) as session:
        thread = support.open_thread(ctx, session, student_id=student_id, channel="telegram", account_id=account,
                                     text=text, language="pl", subject=text[:40])
    ctx.outbox_changed("staff")
    return thread.id or 0


def _reply(ctx: AppContext, thread_id: int, text: str, staff: str = "Ewa (501)") -> None:
    with unit_of_work(ctx.engine) as session:
        support.staff_reply(ctx, session, thread_id, text=text, staff=staff)
    ctx.outbox_changed("telegram")


def _thread(ctx: AppContext, thread_id: int) -> SupportThread:
    with Session(ctx.engine) as session:
        return support.get_thread(session, thread_id)


def _link(ctx: AppContext, account: str) -> ChatLink | None:
    with Session(ctx.engine) as session:
        return session.exec(select(ChatLink).where(ChatLink.account_id == account)).first()


def _actions(ctx: AppContext, thread_id: int) -> list[str]:
    with Session(ctx.engine) as session:
        return [e.action for e in session.exec(select(AuditEvent).where(AuditEvent.thread_id == thread_id)
                                               .order_by(col(AuditEvent.id))).all()]


def _member_update(api: BotApiStandIn, chat_id: int, old: str, new: str) -> None:
    """What Telegram sends when a user blocks ("kicked") or unblocks ("member") the bot in a private chat."""
    bot = api.bot_user()
    new_member: dict[str, Any] = {"status": new, "user": bot}
    if new == "kicked":
        new_member["until_date"] = 0
    api.push_update({"my_chat_member": {
        "chat": {"id": chat_id, "type": "private", "first_name": "Jan"},
        "from": {"id": chat_id, "is_bot": False, "first_name": "Jan", "language_code": "pl"},
        "date": int(time.time()),
        "old_chat_member": {"status": old, "user": bot, **({"until_date": 0} if old == "kicked" else {})},
        "new_chat_member": new_member,
    }})


def _staff_texts(api: BotApiStandIn) -> list[str]:
    return [m.plain_text or "" for m in api.sent_messages(STAFF_CHAT)]


def _cli(ctx: AppContext, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.setenv("MLEG_MODE", "production")
    monkeypatch.setenv("MLEG_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("MLEG_VAR_DIR", str(ctx.settings.var_dir))
    monkeypatch.setenv("MLEG_DATABASE_URL", ctx.settings.effective_database_url)
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


# --- 1. an answer to a student who blocked the bot -----------------------------------------------

async def test_answer_to_unknown_blocked_student_is_held_and_sent_on_unblock(
        api: BotApiStandIn, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody knows who the chat is (no e-mail to fall back on): staff are told, and the answer
    goes out when the student unblocks the bot."""
    ctx = bot_context(tmp_path, sqlite_url, api)
    api.block_chat(6161)
    async with running_bot(ctx):
        thread_id = _open(ctx, "6161", "Nie dostałem maila z kodem", student_id=None)
        await api.await_messages(STAFF_CHAT, 1, timeout=GROUP_WAIT_SECONDS)
        _reply(ctx, thread_id, "Sprawdź folder spam.")
        [failed] = await wait_until(lambda: outbox_rows(ctx, kind="support-answer", status="failed"))
        assert "blocked" in (failed.last_error or "")
        await wait_until(lambda: any(f"#{thread_id}" in t and "Telegram" in t for t in _staff_texts(api)[1:]),
                         what="a note in the staff room")
        note = _staff_texts(api)[-1]
        assert "zablokował" in note and "e-mail" in note  # says it waits, and why not by e-mail
        assert outbox_rows(ctx, channel="email") == []
        assert "thread.answer_undelivered" in _actions(ctx, thread_id)

        shown = _cli(ctx, monkeypatch, "threads", "show", str(thread_id))
        assert "failed" in shown and "blocked" in shown and "answer_undelivered" in shown
        history = json.loads(_cli(ctx, monkeypatch, "threads", "show", str(thread_id), "--json"))["history"]
        assert any(h["action"] == "thread.answer_undelivered" and h["detail"]["fallback"] == "held" for h in history)

        api.block_chat(6161, blocked=False)
        _member_update(api, 6161, "kicked", "member")
        [answer] = await api.await_messages(6161, 1, timeout=8)
        assert "Sprawdź folder spam." in (answer.plain_text or "") and f"nr {thread_id}" in (answer.plain_text or "")
        await wait_until(lambda: "thread.answer_resent" in _actions(ctx, thread_id))
        _member_update(api, 6161, "member", "member")  # a repeated signal sends nothing twice
        await wait_until(lambda: api.updates_pending() == 0)
        await wait_until(lambda: outbox_rows(ctx, channel="telegram", status="sent"))
        await wait_until(lambda: any("wrócił" in t for t in _staff_texts(api)), what="staff told it went out")
    assert len(api.sent_messages(6161)) == 1


async def test_held_answer_goes_out_when_the_student_writes_again(
        api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    api.block_chat(6262)
    async with running_bot(ctx):
        thread_id = _open(ctx, "6262", "Zgubiłem telefon", student_id=None)
        _reply(ctx, thread_id, "Unieważnij ją komendą /revoke.")
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
        thread_id = _open(ctx, "6363", "Kiedy przedłużenie?", student_id=student.id)
        _reply(ctx, thread_id, "Od 1 października.")
        [mail] = await wait_until(lambda: outbox_rows(ctx, channel="email", kind="support-answer"))
        assert mail.recipient == student.email and mail.thread_id == thread_id
        body = open_body(ctx.box, mail)
        assert "Od 1 października." in body.text and f"[MLEG-{thread_id}]" in (body.subject or "")
        await wait_until(lambda: any(f"#{thread_id}" in t and "e-mail" in t for t in _staff_texts(api)[1:]),
                         what="a note in the staff room")
        assert _link(ctx, "6363").blocked_at is not None  # type: ignore[union-attr]
        shown = json.loads(_cli(ctx, monkeypatch, "threads", "show", str(thread_id), "--json"))
        assert any(h["action"] == "thread.answer_undelivered" and h["detail"]["fallback"] == "email"
                   for h in shown["history"])
        [refused] = [d for d in shown["deliveries"] if d["channel"] == "telegram"]
        assert refused["status"] == "failed" and "e-mailed instead" in refused["error"]

        # Already e-mailed: coming back to the chat does not bring a second copy.
        api.block_chat(6363, blocked=False)
        _member_update(api, 6363, "kicked", "member")
        await wait_until(lambda: _link(ctx, "6363").blocked_at is None)  # type: ignore[union-attr]
        await wait_until(lambda: outbox_rows(ctx, channel="staff", status="pending") == [])
    assert api.sent_messages(6363) == []
    assert len(outbox_rows(ctx, channel="email", kind="support-answer")) == 1


# --- 2. my_chat_member ---------------------------------------------------------------------------

async def test_my_chat_member_block_and_unblock(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    student, _ = new_student(ctx)
    with unit_of_work(ctx.engine) as session:
        session.add(ChatLink(channel="telegram", account_id="7171", student_id=student.id or 0,
                             bound_at=ctx.clock.now()))
    async with running_bot(ctx):
        _member_update(api, 7171, "member", "kicked")
        await wait_until(lambda: _link(ctx, "7171").blocked_at is not None, what="blocked_at set")  # type: ignore[union-attr]
        _member_update(api, 7171, "kicked", "member")
        await wait_until(lambda: _link(ctx, "7171").blocked_at is None, what="blocked_at cleared")  # type: ignore[union-attr]
        # A group the bot is removed from is not a student: nothing breaks, nothing is marked.
        api.push_update({"my_chat_member": {
            "chat": {"id": -100777, "type": "supergroup", "title": "Inna grupa"},
            "from": {"id": 9, "is_bot": False, "first_name": "Ktoś"}, "date": int(time.time()),
            "old_chat_member": {"status": "member", "user": api.bot_user()},
            "new_chat_member": {"status": "left", "user": api.bot_user()},
        }})
        await wait_until(lambda: api.updates_pending() == 0)
    assert api.sent_messages(7171) == []


# --- 3. /claim of a thread a colleague holds -----------------------------------------------------

async def test_claim_of_a_claimed_thread_asks_to_confirm(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    api.set_member_status(STAFF_CHAT, EWA, "member")
    api.set_member_status(STAFF_CHAT, PIOTR, "member")
    student, _ = new_student(ctx)
    async with running_bot(ctx):
        thread_id = _open(ctx, "8181", "Nowy semestr", student_id=student.id)
        [posted] = await api.await_messages(STAFF_CHAT, 1, timeout=GROUP_WAIT_SECONDS)
        api.push_group_text(STAFF_CHAT, EWA, f"/claim {thread_id}", first_name="Ewa")
        await wait_until(lambda: "501" in (_thread(ctx, thread_id).claimed_by or ""))

        api.push_group_text(STAFF_CHAT, PIOTR, f"/claim {thread_id}", first_name="Piotr")
        [*_, asked] = await api.await_messages(STAFF_CHAT, 3, timeout=GROUP_WAIT_SECONDS)
        assert "Ewa (501)" in (asked.plain_text or "") and f"/claim {thread_id} force" in (asked.plain_text or "")
        assert asked.callback_data(f"#{thread_id}") == f"staff:takeover:{thread_id}"
        assert "501" in (_thread(ctx, thread_id).claimed_by or "")  # not taken silently

        api.push_group_text(STAFF_CHAT, PIOTR, f"/claim {thread_id} force", first_name="Piotr")
        await wait_until(lambda: "502" in (_thread(ctx, thread_id).claimed_by or ""))
        [*_, taken] = await api.await_messages(STAFF_CHAT, 4, timeout=GROUP_WAIT_SECONDS)
        assert "Piotr" in (taken.plain_text or "") and "Ewa (501)" in (taken.plain_text or "")

        # The button works the same way, for Ewa taking it back.
        api.push_callback(STAFF_CHAT, EWA, f"staff:takeover:{thread_id}", asked.message_id, first_name="Ewa")
        await wait_until(lambda: "501" in (_thread(ctx, thread_id).claimed_by or ""))
        # Claiming what one already holds is no take-over.
        api.push_group_text(STAFF_CHAT, EWA, f"/claim {thread_id}", first_name="Ewa")
        await api.await_messages(STAFF_CHAT, 6, timeout=GROUP_WAIT_SECONDS)
        # Nor is pressing the escalation's /claim button on a thread someone else holds.
        api.push_callback(STAFF_CHAT, PIOTR, f"staff:claim:{thread_id}", posted.message_id, first_name="Piotr")
        [*_, again] = await api.await_messages(STAFF_CHAT, 7, timeout=GROUP_WAIT_SECONDS)
        assert "Ewa (501)" in (again.plain_text or "")
    assert "501" in (_thread(ctx, thread_id).claimed_by or "")
    assert _actions(ctx, thread_id).count("thread.taken_over") == 2
    assert _actions(ctx, thread_id).count("thread.claimed") == 2


def test_claim_thread_refuses_a_silent_take_over(ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    thread_id = _open(ctx, "9191", "Pytanie", student_id=None)
    with unit_of_work(ctx.engine) as session:
        support.claim_thread(ctx, session, thread_id, staff="ewa")
    with pytest.raises(support.ThreadClaimed) as refused, unit_of_work(ctx.engine) as session:
        support.claim_thread(ctx, session, thread_id, staff="piotr")
    assert refused.value.holder == "ewa"
    assert _thread(ctx, thread_id).claimed_by == "ewa"
    with unit_of_work(ctx.engine) as session:
        support.claim_thread(ctx, session, thread_id, staff="ewa")  # one's own: fine
        support.claim_thread(ctx, session, thread_id, staff="piotr", force=True)
    assert _thread(ctx, thread_id).claimed_by == "piotr"
    assert _actions(ctx, thread_id)[-1] == "thread.taken_over"

    shown = json.loads(_cli(ctx, monkeypatch, "threads", "show", str(thread_id), "--json"))
    [taken] = [h for h in shown["history"] if h["action"] == "thread.taken_over"]
    assert taken["actor"] == "staff:piotr" and taken["detail"] == {"previous": "ewa"}
    assert "taken_over" in _cli(ctx, monkeypatch, "threads", "show", str(thread_id))


def test_refused_answer_held_then_resent_once(ctx: AppContext) -> None:
    """core.support without Telegram, on both databases: held, resent once, refused again, held again."""
    thread_id = _open(ctx, "4242", "Pytanie", student_id=None)
    _reply(ctx, thread_id, "Odpowiedź.")

    def refuse(kind: str = "support-answer") -> int:
        [row] = outbox.claim(ctx.engine, channel="telegram", now=ctx.clock.now())
        with unit_of_work(ctx.engine) as session:
            note = support.answer_undelivered(ctx, session, row, reason="bot was blocked by the user")
        assert note == support.HELD_NOTE
        outbox.record(ctx.engine, row, DeliveryResult(ok=False, permanent=True, error=f"Forbidden: x; {note}"),
                      ctx.clock.now())
        return row.id or 0

    first = refuse()
    with unit_of_work(ctx.engine) as session:
        [again] = support.resend_held_answers(ctx, session, channel="telegram", account_id="4242")
        assert "Odpowiedź." in open_body(ctx.box, again).text
    with unit_of_work(ctx.engine) as session:  # the same return seen twice: nothing more
        assert support.resend_held_answers(ctx, session, channel="telegram", account_id="4242") == []
    [old] = outbox_rows(ctx, id=first)
    assert f"re-sent as outbox #{again.id}" in (old.last_error or "")

    refuse()  # blocked again before the resend went out
    with unit_of_work(ctx.engine) as session:
        [third] = support.resend_held_answers(ctx, session, channel="telegram", account_id="4242")
    assert third.id != again.id
    assert _actions(ctx, thread_id).count("thread.answer_resent") == 2
    reminder = OutboxMessage(idempotency_key="reminder:1", channel="telegram", recipient="4242", kind="reminder")
    with unit_of_work(ctx.engine) as session:  # other rows are not answers: left alone
        assert support.answer_undelivered(ctx, session, reminder, reason="x") is None
