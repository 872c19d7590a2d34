"""A 5,000-character answer reaches the student in parts under Telegram's 4096 limit, never refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.render import MAX_TEXT, split_for_telegram, utf16_len
from core.storage.db import unit_of_work
from core.support import answers
from core.support import threads as support
from tests.bot_harness import bot_context, new_student, outbox_rows, running_bot, wait_until
from tests.servers.botapi import BotApiStandIn

pytestmark = pytest.mark.timeout(30)


async def test_staff_answer_of_5000_characters(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    ctx = bot_context(tmp_path, sqlite_url, api)
    student, _ = new_student(ctx)
    words = " ".join(f"słowo{n}<&>" for n in range(600))[:5000]
    assert len(words) == 5000
    with unit_of_work(ctx.engine) as session:
        thread = support.open_thread(ctx, session, student_id=student.id, channel="telegram", account_id="7171",
                                     text="Pytanie", language="pl")
        answers.staff_reply(ctx, session, thread.id or 0, text=words, staff="cli")
    async with running_bot(ctx):
        await wait_until(lambda: all(r.status == "sent" for r in outbox_rows(ctx, channel="telegram")))
    parts = api.sent_messages(7171)
    assert len(parts) == 2
    assert all(utf16_len(p.plain_text or "") <= MAX_TEXT for p in parts)
    assert all(c.status == 200 for c in api.calls("sendMessage"))
    joined = " ".join(p.plain_text or "" for p in parts)
    assert words in joined  # every word arrived, in order, unescaped for the reader


@given(st.text(alphabet=st.sampled_from(list("ab <&>_*[\n😀ż")), max_size=9000))
def test_split_never_exceeds_the_limit_and_keeps_the_words(text: str) -> None:
    chunks = split_for_telegram(text, limit=700)
    assert all(utf16_len(c) <= 700 for c in chunks)
    assert "".join(text.split()) == "".join("".join(chunks).split())


def test_split_prefers_paragraphs() -> None:
    text = "a" * 3000 + "\n\n" + "b" * 3000
    assert split_for_telegram(text) == ["a" * 3000, "b" * 3000]
    assert split_for_telegram("short") == ["short"]
