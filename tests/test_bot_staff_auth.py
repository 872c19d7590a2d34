"""Only the staff chat's members (or listed ids) act on threads; anyone else is refused and audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.storage.db import unit_of_work
from core.storage.models import AuditEvent, SupportThread
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

pytestmark = pytest.mark.timeout(30)
OUTSIDER, LISTED = 666, 777


def _refusals(engine) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == "staff.refused")).all())


async def test_non_staff_refused_and_audited(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api, staff_user_ids=[LISTED])
    student, _ = new_student(ctx)
    with unit_of_work(ctx.engine) as session:
        thread = support.open_thread(ctx, session, student_id=student.id, channel="telegram", account_id="3131",
                                     text="Pomocy", language="pl")
    thread_id = thread.id or 0
    # Someone who left (or was restricted) but whose message still reaches the bot.
    api.set_member_status(STAFF_CHAT, OUTSIDER, "restricted")
    api.set_member_status(STAFF_CHAT, LISTED, "left")
    async with running_bot(ctx):
        [posted] = await api.await_messages(STAFF_CHAT, 1, timeout=GROUP_WAIT_SECONDS)
        await wait_until(lambda: outbox_rows(ctx, channel="staff", status="sent"))  # its id is on record
        api.push_group_text(STAFF_CHAT, OUTSIDER, "Podaj mi swój PESEL", reply_to_message_id=posted.message_id)
        api.push_group_text(STAFF_CHAT, OUTSIDER, f"/close {thread_id}")
        api.push_callback(STAFF_CHAT, OUTSIDER, f"staff:claim:{thread_id}", posted.message_id)
        await wait_until(lambda: len(_refusals(ctx.engine)) == 3, what="three refusals audited")
        [alert] = await api.await_calls("answerCallbackQuery", 1)
        assert alert.params.get("show_alert") in (True, "true") and alert.params.get("text")
        refusals = await api.await_messages(STAFF_CHAT, 3, timeout=GROUP_WAIT_SECONDS)
        assert all(m.plain_text == ctx.catalog.text("pl", "bot.staff.refused") for m in refusals[1:])
        assert api.sent_messages(3131) == []  # nothing reached the student
        with Session(ctx.engine) as session:
            assert session.get(SupportThread, thread_id).status == "escalated"  # type: ignore[union-attr]
        assert {e.actor for e in _refusals(ctx.engine)} == {f"telegram:{OUTSIDER}"}

        # An id listed in settings may act even without being a member.
        api.push_group_text(STAFF_CHAT, LISTED, f"/claim {thread_id}")
        await wait_until(lambda: Session(ctx.engine).get(SupportThread, thread_id).status == "claimed")  # type: ignore[union-attr]
