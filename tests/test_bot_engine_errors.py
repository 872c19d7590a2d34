"""A transient engine/database error: retried unseen; only a turn that keeps failing gets `error_technical`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from core.conversation import ConversationService
from tests.bot_harness import TgStudent, bot_context, outbox_rows, running_bot, wait_until
from tests.servers.botapi import BotApiStandIn

pytestmark = pytest.mark.timeout(30)


def _failing(times: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    real = ConversationService.handle
    calls: list[str] = []

    def handle(self: ConversationService, event: Any, **kw: Any) -> Any:
        calls.append(event.event_id)
        if len(calls) <= times:
            raise OperationalError("SELECT 1", {}, Exception("database is locked"))
        return real(self, event, **kw)

    monkeypatch.setattr(ConversationService, "handle", handle)
    return calls


async def test_transient_error_retried_without_apology(api: BotApiStandIn, tmp_path: Path, sqlite_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _failing(1, monkeypatch)
    ctx = bot_context(tmp_path, sqlite_url, api)
    async with running_bot(ctx):
        chat = TgStudent(api, ctx, 1212)
        await chat.say("/start")
        await api.await_messages(1212, 1)
        texts = [m.plain_text for m in api.sent_messages(1212)]
    assert ctx.catalog.text("pl", "error_technical") not in texts  # the retry cured it: no apology
    assert texts[0].startswith(ctx.catalog.text("pl", "greeting"))
    assert len(set(calls)) == 1 and len(calls) == 2
    assert len(texts) == len(outbox_rows(ctx, channel="telegram")) == 1  # the real answer, once


async def test_persistent_error_leaves_the_event_unhandled(api: BotApiStandIn, tmp_path: Path, sqlite_url: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _failing(99, monkeypatch)
    ctx = bot_context(tmp_path, sqlite_url, api)
    async with running_bot(ctx):
        chat = TgStudent(api, ctx, 1313)
        await chat.say("hello")
        assert chat.text == ctx.catalog.text("pl", "error_technical")
        await wait_until(lambda: len(calls) == 3, what="three attempts")
    assert outbox_rows(ctx) == [] and len(api.sent_messages(1313)) == 1  # one apology, not three
    # Nothing committed: the engine would take the same update again as new.
    assert calls[0] not in ConversationService(ctx).state_of("telegram", "1313").handled
