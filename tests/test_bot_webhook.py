"""Webhook mode: PTB's webhook server takes only requests carrying the secret token."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.models import Conversation
from tests.bot_harness import TgStudent, bot_context, running_bot
from tests.servers.botapi import BotApiStandIn, post_update_to_webhook

pytestmark = pytest.mark.timeout(30)
SECRET = "s3cret-token-for-tests_0123456789abcdef"


@pytest.fixture
def api() -> Iterator[BotApiStandIn]:
    with BotApiStandIn() as standin:
        yield standin


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _update(update_id: int, chat_id: int, text: str) -> dict[str, object]:
    user = {"id": chat_id, "is_bot": False, "first_name": "Mallory"}
    return {"update_id": update_id, "message": {
        "message_id": 1, "date": int(time.time()), "text": text, "from": user,
        "chat": {"id": chat_id, "type": "private", "first_name": "Mallory"}}}


async def test_forged_update_without_secret_refused(api: BotApiStandIn, tmp_path: Path, sqlite_url: str) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    ctx = bot_context(tmp_path, sqlite_url, api, webhook_url=url, webhook_secret=SECRET,
                      webhook_listen="127.0.0.1", webhook_port=port)
    async with running_bot(ctx):
        assert api.webhook["url"] == url and api.webhook["secret_token"] == SECRET
        # Telegram (the stand-in) delivers with the secret: served.
        chat = TgStudent(api, ctx, 2121)
        await chat.say("/start")
        assert chat.last

        for secret in (None, "wrong"):
            status = await asyncio.to_thread(post_update_to_webhook, _update(9000, 2222, "/start"), url, secret)
            assert status == 403
        await asyncio.sleep(0.3)
    assert api.sent_messages(2222) == []
    with Session(ctx.engine) as session:
        accounts = [c.account_id for c in session.exec(select(Conversation)).all()]
    assert accounts == ["2121"]  # the forged update never reached the engine
