"""The staff side of a support thread without Telegram's help: open one, answer it, read it back,
and what Telegram sends when a student blocks or unblocks the bot."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from core.app.context import AppContext
from core.cli import app
from core.storage.db import unit_of_work
from core.storage.models import AuditEvent, ChatLink, SupportThread
from core.support import answers
from core.support import threads as support
from tests.bot_harness import STAFF_CHAT
from tests.factories import TEST_SECRET
from tests.servers.botapi import BotApiStandIn
from tests.support.chat import new_student


def open_thread(ctx: AppContext, account: str, text: str, *, student_id: int | None) -> int:
    """What the engine does when a student asks for the help desk."""
    with unit_of_work(ctx.engine) as session:
        thread = support.open_thread(ctx, session, student_id=student_id, channel="telegram", account_id=account,
                                     text=text, language="pl", subject=text[:40])
    ctx.outbox_changed("staff")
    return thread.id or 0


def escalate(ctx: AppContext, account: str, text: str) -> int:
    """A new student's help-desk question, as the engine opens it: the thread's id."""
    student, _ = new_student(ctx)
    return open_thread(ctx, account, text, student_id=student.id)


def staff_reply(ctx: AppContext, thread_id: int, text: str, staff: str = "Ewa (501)") -> None:
    with unit_of_work(ctx.engine) as session:
        answers.staff_reply(ctx, session, thread_id, text=text, staff=staff)
    ctx.outbox_changed("telegram")


def thread(ctx: AppContext, thread_id: int) -> SupportThread:
    with Session(ctx.engine) as session:
        return support.get_thread(session, thread_id)


def chat_link(ctx: AppContext, account: str) -> ChatLink | None:
    with Session(ctx.engine) as session:
        return session.exec(select(ChatLink).where(ChatLink.account_id == account)).first()


def thread_actions(ctx: AppContext, thread_id: int) -> list[str]:
    with Session(ctx.engine) as session:
        return [e.action for e in session.exec(select(AuditEvent).where(AuditEvent.thread_id == thread_id)
                                               .order_by(col(AuditEvent.id))).all()]


def push_member_update(api: BotApiStandIn, chat_id: int, old: str, new: str) -> None:
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


def staff_texts(api: BotApiStandIn) -> list[str]:
    return [m.plain_text or "" for m in api.sent_messages(STAFF_CHAT)]


def mleg(ctx: AppContext, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """`mleg ARGS` in-process on `ctx`'s database (either kind; the `runner` fixture is SQLite's)."""
    monkeypatch.setenv("MLEG_MODE", "production")
    monkeypatch.setenv("MLEG_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("MLEG_VAR_DIR", str(ctx.settings.var_dir))
    monkeypatch.setenv("MLEG_DATABASE_URL", ctx.settings.effective_database_url)
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output
