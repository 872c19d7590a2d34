"""Mail that arrives while the reader is busy with earlier mail is read at once, not after IDLE times out."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

import mail.frontend as frontend_module
from core.app.clock import FixedClock
from core.storage.models import InboundMail
from mail.frontend import MailFrontend
from tests.mail_samples.kit import mail_ctx, sample
from tests.servers.dovecot import DovecotServer


async def test_a_mail_arriving_during_a_cycle_is_read_without_waiting_for_the_next_push(
    tmp_path: Path, sqlite_url: str, clock: FixedClock, dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    support = dovecot.new_user(prefix="support")
    ctx = mail_ctx(tmp_path, sqlite_url, clock,
                   imap={"host": dovecot.host, "port": dovecot.imap_port, "security": "none",
                         "username": support, "password": dovecot.password},
                   university={"help_desk_email": support})
    real = frontend_module.process_pending
    arrived: list[float] = []

    def busy(*args: Any, **kwargs: Any) -> Any:
        # The second mail lands while the first is being processed: after this cycle's search.
        if not arrived:
            dovecot.deliver(support, sample("win1250_question.eml", support=support, n="2",
                                            sender=dovecot.new_user()))
            arrived.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(frontend_module, "process_pending", busy)
    dovecot.deliver(support, sample("win1250_question.eml", support=support, n="1", sender=dovecot.new_user()))
    reader = MailFrontend(ctx)
    stored_when_waiting: list[int] = []
    wait = reader._wait_for_mail

    async def waiting(imap: Any) -> None:
        with Session(ctx.engine) as session:
            stored_when_waiting.append(len(session.exec(select(InboundMail)).all()))
        await wait(imap)

    monkeypatch.setattr(reader, "_wait_for_mail", waiting)
    await reader.start()
    try:
        deadline = time.monotonic() + 60  # Dovecot's own checks wake an IDLE within about half a minute
        while True:
            with Session(ctx.engine) as session:
                handled = [m for m in session.exec(select(InboundMail)).all() if m.status != "new"]
            if len(handled) == 2:
                break
            assert time.monotonic() < deadline, "the second mail was never read"
            await asyncio.sleep(0.1)
    finally:
        await reader.stop()
        ctx.engine.dispose()
    # The reader never went into IDLE with only the first mail in (it may not have gone into IDLE at
    # all before the test ended): it looked again after the busy cycle instead of waiting for the
    # server to announce what it had already announced.
    assert arrived and 1 not in stored_when_waiting
