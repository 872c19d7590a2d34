"""The console chat (`mleg chat`): a turn that fails is apologised for in the conversation's language."""

from __future__ import annotations

import pytest

from core.cli.chat import ConsoleChat
from core.context import AppContext


def test_a_failed_turn_is_apologised_for_in_the_students_language(sqlite_ctx: AppContext,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    chat = ConsoleChat(sqlite_ctx, "console-en", write=lines.append)
    chat.turn("/start")
    chat.turn("2")  # the second button: English
    assert chat.service.state_of("console", "console-en").language == "en"

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(chat.service, "handle", broken)
    lines.clear()
    chat.turn("hello")
    assert [line.strip() for line in lines] == [sqlite_ctx.catalog.text("en", "error_technical")]
