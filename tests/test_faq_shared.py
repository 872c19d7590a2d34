"""Issue 17: `mleg serve` builds the FAQ and trains the understanding once, and every front-end uses that one.

The chat's engine, the mailbox reader and the web console each loaded the FAQ on their own
(and serve's start-up warmed a fourth, from config/faq rather than the configuration layers).
"""

from __future__ import annotations

import pytest

from core.app.context import AppContext
from core.conversation.runner import ConversationService
from core.understanding import model
from mail.frontend import MailFrontend
from web.app import Desk


def test_the_chat_the_mailbox_reader_and_the_console_share_the_contexts_one_faq(
        sqlite_ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    trained: list[object] = []
    real = model.Understanding.__init__

    def counting(self: model.Understanding, *args: object, **kwargs: object) -> None:
        trained.append(self)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(model, "_CACHE", {})  # as in a fresh process: nothing trained yet
    monkeypatch.setattr(model.Understanding, "__init__", counting)

    chat = ConversationService(sqlite_ctx).config.faq
    mail = MailFrontend(sqlite_ctx).faq
    console = Desk(sqlite_ctx).faq

    assert chat is mail is console is sqlite_ctx.faq
    assert len(trained) == 1


def test_the_faq_is_not_loaded_until_something_reads_text(sqlite_ctx: AppContext) -> None:
    MailFrontend(sqlite_ctx)  # `mleg mail check` builds a reader: that alone must not train anything
    assert sqlite_ctx._faq is None
