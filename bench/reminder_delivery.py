"""Benchmark P4: reminder delivery rate through the real Telegram sender against the configured cap.

    .venv/bin/python -m bench.reminder_delivery [--reminders 600]

K reminders (outbox rows of kind "reminder", one to each of K linked Telegram students,
queued as the reminders job queues them: core.messaging.outbox.enqueue on channel "telegram") are
delivered by `mleg serve`'s drainer (core.app.serve.Server with the "telegram" sender, no
front-end, no jobs) to the Bot API stand-in enforcing Telegram's limits (429 beyond 30
messages a second overall or one a second into one chat). Prints the achieved rate next
to the configured cap (settings.telegram.messages_per_second; target at least 0.9 of it)
and the 429s the stand-in sent (target 0).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

from sqlmodel import Session, col, func, select

from bench.targets import verdict
from core.app import serve
from core.app.clock import SystemClock
from core.app.context import AppContext
from core.messaging import outbox
from core.messaging.outgoing import Button, OutgoingMessage
from core.storage.db import make_engine, unit_of_work, upgrade
from core.storage.models import ChatLink, OutboxMessage, OutboxStatus
from tests.factories import SeededRandom, add_student, make_settings
from tests.servers.botapi import BotApiStandIn

FIRST_CHAT = 800_000


def _queue(ctx: AppContext, count: int) -> None:
    now = datetime.now(UTC)
    with unit_of_work(ctx.engine) as session:
        for i in range(count):
            student, _ = add_student(session, ctx.box, pesel="", album=str(900_000 + i),
                                     email=f"r{i}@student.example.edu.pl")
            chat = str(FIRST_CHAT + i)
            session.add(ChatLink(channel="telegram", account_id=chat, student_id=student.id or 0,
                                 language="pl", bound_at=now))
            message = OutgoingMessage(text="Twoja mLegitymacja traci ważność za 3 dni.",
                                      buttons=[[Button("Przedłuż", "menu:renew")]])
            outbox.enqueue(session, ctx.box, key=f"bench-reminder:{i}", channel="telegram", recipient=chat,
                           kind="reminder", message=message, now=now, student_id=student.id)


def _sent(ctx: AppContext) -> int:
    with Session(ctx.engine) as session:
        return int(session.exec(select(func.count()).select_from(OutboxMessage).where(
            col(OutboxMessage.status) == OutboxStatus.SENT)).one())


async def run(count: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp, BotApiStandIn(enforce_rate_limits=True) as api:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        engine = make_engine(url)
        upgrade(engine)
        settings = make_settings(Path(tmp), database_url=url,
                                 telegram={"token": api.token, "api_base_url": api.base_url})
        ctx = AppContext(settings=settings, engine=engine, clock=SystemClock(), random=SeededRandom())
        _queue(ctx, count)
        from bot.channel import make_telegram_channel

        sender = make_telegram_channel(ctx)
        assert sender is not None
        server = serve.Server(ctx, run_jobs=False)
        with mock.patch.object(serve, "load_channels", lambda _ctx: {"telegram": sender}), \
                mock.patch.object(serve, "load_frontends", lambda _ctx: []):
            started = time.perf_counter()
            await server.start()
        try:
            while await asyncio.to_thread(_sent, ctx) < count:  # noqa: ASYNC110 - the database is the truth
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
        finally:
            await server.stop()
            engine.dispose()
        sends = [c.at for c in api.calls("sendMessage") if c.ok]
        wire = (len(sends) - 1) / (sends[-1] - sends[0]) if len(sends) > 1 else float("nan")
    cap = settings.telegram.messages_per_second
    rate = count / elapsed
    print(f"reminder delivery, {count} reminders to {count} chats, stand-in enforcing 30/s overall and 1/s per chat:")
    print(f"  configured cap      {cap:7.1f} messages/s")
    print(f"  achieved (queue->sent, incl. start-up) {rate:7.1f} messages/s   ratio to cap {rate / cap:5.2f}   "
          + verdict("P4 reminders: queue-to-sent rate / cap", rate / cap, ">=", 0.9))
    print(f"  on the wire (first->last send)         {wire:7.1f} messages/s   ratio to cap {wire / cap:5.2f}")
    print(f"  total time {elapsed:6.2f} s   429s sent by the stand-in: {api.too_many_requests_sent}   "
          + verdict("P4 reminders: HTTP 429s", api.too_many_requests_sent, "<=", 0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reminders", type=int, default=600)
    args, _ = parser.parse_known_args(argv)
    asyncio.run(run(args.reminders))


if __name__ == "__main__":
    main()
