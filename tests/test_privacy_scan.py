"""After a full journey, the database file and the logs hold no clear PESEL and no activation code."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from core import outbox
from core.context import AppContext
from core.db import unit_of_work
from core.models import OutboxMessage
from core.outgoing import OutgoingMessage
from tests.chat_driver import ChatDriver
from tests.conftest import add_student


async def test_no_clear_pesel_or_code_in_database_or_logs(
    sqlite_ctx: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with unit_of_work(sqlite_ctx.engine) as session:
        student, pesel = add_student(session, sqlite_ctx.box)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("pl")
    chat.say(pesel[:10])  # a typo first: the wrong number must not be kept either
    chat.say(pesel)
    chat.say(student.album)
    binding_code = chat.binding_code()
    chat.say(binding_code)
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    sent: list[str] = []

    async def deliver(row: OutboxMessage, message: OutgoingMessage) -> outbox.DeliveryResult:
        sent.append(message.text)
        return outbox.DeliveryResult(ok=True)

    await outbox.drain_once(sqlite_ctx.engine, sqlite_ctx.box, channel="email", now=sqlite_ctx.clock.now,
                            deliver=deliver)
    activation_code = re.search(r"Kod aktywacyjny: (\S+)", "\n".join(sent))
    assert activation_code, "the activation e-mail was delivered with its code"
    sqlite_ctx.engine.dispose()
    database = Path(sqlite_ctx.settings.effective_database_url.removeprefix("sqlite:///"))
    blob = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    secrets = {
        "pesel": pesel, "pesel typo": pesel[:10], "binding code": binding_code,
        "activation code": activation_code.group(1),
        "activation code (plain)": activation_code.group(1).replace("-", ""),
    }
    for label, value in secrets.items():
        assert value.encode() not in blob, f"{label} found in the database file"
        assert value not in caplog.text, f"{label} found in the logs"
