"""Benchmark P1: updates/s of the full bot on the Bot API stand-in, next to a bare and a durable PTB echo bot.

    .venv/bin/python -m bench.chat_throughput [--chats 500] [--concurrency 100]

The full bot is `mleg serve` in this process (core.app.serve.Server with the real
TelegramFrontend, conversation engine, SQLite, outbox, the "telegram" sender and the
"email" sender into a loopback SMTP server). Every chat makes the whole journey of a
student in the register (eight updates, each waiting for what the student needs for the
next one): /start, the language button, "accept the terms", the PESEL, the album number
(the bot mails a chat code to the register address), the code as read from that e-mail
at the SMTP server, "apply", and "yes" (the application is made). The expensive turns
(identification, the code mail, the application) are all in. The baseline is a bare
python-telegram-bot Application (PTB's own Updater polling the same stand-in, one
MessageHandler that echoes with `reply_text`) receiving the same number of updates the
same way (eight texts per chat). `--concurrency` chats journey at once, each one
strictly turn by turn.

Rate limits are off in the stand-in and our own caps are lifted (messages_per_second
and messages_per_chat_per_second at 10,000), so this measures the bot, not Telegram's
limits (those are P4, bench/reminder_delivery.py). The stand-in and the students
driving it run in a child process (they are Telegram's side of the wire and must not
share the bot's interpreter lock). Latency of an update: from pushing it into the
stand-in to the first sendMessage the stand-in answered in that chat (for the album
number: to the code e-mail's arrival at the SMTP server, what the student waits for).
Prints absolute figures and the ratio to the echo bot measured in the same run, and each bot's
CPU time per update (this process, all threads): on a machine other work loads, the figure that moves least.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select
from telegram import Update
from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters

from bench.targets import verdict
from core.app.clock import SystemClock
from core.app.context import AppContext
from core.storage import db as product_db
from core.storage.db import make_engine, unit_of_work, upgrade
from core.storage.models import Application as ApplicationRow
from core.storage.models import Student
from core.students.demo_register import make_pesel
from core.students.pesel import mask_pesel
from tests.factories import UNIVERSITY_DOMAIN, SeededRandom, make_settings
from tests.servers.botapi import BotApiStandIn
from tests.servers.smtp_relay import SmtpRelay

FIRST_CHAT = 700_000
UNCAPPED = 10_000.0
_CHAT_CODE = re.compile(r"\b(\d{6})\b")


def register_student(chat: int) -> tuple[str, str, str]:
    """(PESEL, album, e-mail) of the register row the student in `chat` is; both processes know it."""
    n = chat - FIRST_CHAT
    pesel = make_pesel(date(2001, 1 + (n // 28) % 12, 1 + n % 28), serial=100 + n % 800, female=False)
    return pesel, str(800_000 + n), f"s{n}@{UNIVERSITY_DOMAIN}"


class Mailbox:
    """The students' inboxes: the chat codes the bot mailed, as the SMTP server received them."""

    def __init__(self, relay: SmtpRelay) -> None:
        self.relay = relay
        self.seen = 0
        self.codes: dict[str, tuple[str, float]] = {}  # address -> (newest code, when it arrived)

    def scan(self) -> None:
        messages = self.relay.messages
        for received in messages[self.seen:]:
            mail = message_from_bytes(received.data, policy=default_policy)
            body = mail.get_body(("plain",))
            found = _CHAT_CODE.search(body.get_content() if body is not None else "")  # type: ignore[union-attr]
            if found:
                for address in received.rcpt_tos:
                    self.codes[address.lower()] = (found.group(1), received.received_at)
        self.seen = len(messages)


@dataclass
class Watcher:
    """Follows the stand-in's answered sendMessage calls: per chat, their times and buttons."""

    api: BotApiStandIn
    mailbox: Mailbox | None = None
    seen: int = 0
    times: dict[int, list[float]] = field(default_factory=dict)
    buttons: dict[int, list[tuple[int, set[str]]]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def scan(self) -> None:
        # Only the requests since the last scan: copying all of them every 2 ms made the load
        # generator's cost grow with the run, and grow faster for the bot that sends more.
        new = self.api.calls(include_polling=True, since=self.seen)
        self.seen += len(new)
        for call in new:
            if not call.ok or call.method != "sendMessage":
                continue
            chat = int(call.params["chat_id"])
            self.times.setdefault(chat, []).append(call.at)
            markup = call.params.get("reply_markup") or {}
            data = {b.get("callback_data", "") for row in markup.get("inline_keyboard", []) for b in row}
            self.buttons.setdefault(chat, []).append((int(call.response["result"]["message_id"]), data))
        if self.mailbox is not None:
            before = len(self.mailbox.codes), self.mailbox.seen
            self.mailbox.scan()
            if (len(self.mailbox.codes), self.mailbox.seen) != before:
                self.changed.set()
        if new:
            self.changed.set()

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.scan)
            await asyncio.sleep(0.002)

    async def until(self, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("no reply in time")
            self.changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))

    def count(self, chat: int) -> int:
        return len(self.times.get(chat, []))

    def button(self, chat: int, data: str) -> int | None:
        for message_id, found in reversed(self.buttons.get(chat, [])):
            if data in found:
                return message_id
        return None


Step = Callable[[BotApiStandIn, Watcher, int], Awaitable[float]]


async def _text_step(api: BotApiStandIn, watcher: Watcher, chat: int, text: str) -> float:
    before = watcher.count(chat)
    pushed = time.time()
    if text.startswith("/"):
        api.push_command(chat, chat, text)
    else:
        api.push_text(chat, chat, text)
    await watcher.until(lambda: watcher.count(chat) > before)
    return watcher.times[chat][before] - pushed


async def _press_step(api: BotApiStandIn, watcher: Watcher, chat: int, data: str) -> float:
    message_id = await watcher.until(lambda: watcher.button(chat, data))
    before = watcher.count(chat)
    pushed = time.time()
    api.push_callback(chat, chat, data, message_id)
    await watcher.until(lambda: watcher.count(chat) > before)
    return watcher.times[chat][before] - pushed


async def _journeys(api: BotApiStandIn, chats: int, concurrency: int, steps: list[Step],
                    mailbox: Mailbox | None = None) -> tuple[float, list[float]]:
    watcher = Watcher(api, mailbox)
    watch = asyncio.create_task(watcher.run())
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def journey(chat: int) -> None:
        async with gate:
            for step in steps:
                latencies.append(await step(api, watcher, chat))

    started = time.perf_counter()
    try:
        await asyncio.gather(*(journey(FIRST_CHAT + i) for i in range(chats)))
    finally:
        elapsed = time.perf_counter() - started
        watch.cancel()
    return elapsed, latencies


def _bot_steps() -> list[Step]:
    async def start(api: BotApiStandIn, w: Watcher, chat: int) -> float:
        return await _text_step(api, w, chat, "/start")

    async def language(api: BotApiStandIn, w: Watcher, chat: int) -> float:
        return await _press_step(api, w, chat, "lang:pl")

    async def terms(api: BotApiStandIn, w: Watcher, chat: int) -> float:
        return await _press_step(api, w, chat, "terms:accept")

    async def pesel(api: BotApiStandIn, w: Watcher, chat: int) -> float:
        return await _text_step(api, w, chat, register_student(chat)[0])

    async def album(api: BotApiStandIn, w: Watcher, chat: int) -> float:
        """The second number: the bot answers and mails a chat code; the student waits for the mail."""
        assert w.mailbox is not None
        address = register_student(chat)[2]
        pushed = time.time()
        await _text_step(api, w, chat, register_student(chat)[1])
        _code, arrived = await w.until(lambda: w.mailbox.codes.get(address) if w.mailbox else None)
        return arrived - pushed

    async def code(api: BotApiStandIn, w: Watcher, chat: int) -> float:
        assert w.mailbox is not None
        return await _text_step(api, w, chat, w.mailbox.codes[register_student(chat)[2]][0])

    async def apply(api: BotApiStandIn, w: Watcher, chat: int) -> float:
        return await _press_step(api, w, chat, "menu:request")

    async def confirm(api: BotApiStandIn, w: Watcher, chat: int) -> float:
        return await _press_step(api, w, chat, "confirm:yes:request")

    return [start, language, terms, pesel, album, code, apply, confirm]


def _echo_steps() -> list[Step]:
    async def say(api: BotApiStandIn, w: Watcher, chat: int) -> float:
        return await _text_step(api, w, chat, "hello")

    return [say] * len(_bot_steps())


def _full_bot(tmp: Path, token: str, base_url: str, smtp: tuple[str, int], chats: int,
              web_port: int | None = None) -> AbstractAsyncContextManager[Any]:
    from contextlib import asynccontextmanager
    from unittest import mock

    from bot.frontend import TelegramFrontend
    from core.app import serve
    from core.app.plugins import load_channels

    url = f"sqlite:///{tmp / 'bench.db'}"
    engine = make_engine(url)
    upgrade(engine)
    settings = make_settings(tmp, database_url=url, telegram={
        "token": token, "api_base_url": base_url,
        "messages_per_second": UNCAPPED, "messages_per_chat_per_second": UNCAPPED,
    }, smtp={"host": smtp[0], "port": smtp[1], "security": "none"},
        web={"port": web_port, "secure_cookies": False})  # bench.web_console runs the console beside it
    ctx = AppContext(settings=settings, engine=engine, clock=SystemClock(), random=SeededRandom())
    now = datetime.now(UTC)
    with unit_of_work(engine) as session:
        for chat in range(FIRST_CHAT, FIRST_CHAT + chats):
            pesel, album, email = register_student(chat)
            session.add(Student(album=album, first_name="Anna", last_name="Testowa", email=email,
                                study_level="first_cycle", status="active", els_number=None, els_valid_until=None,
                                row_digest="x", created_at=now, updated_at=now,
                                pesel_hash=ctx.box.pesel_hash(pesel), pesel_masked=mask_pesel(pesel)))

    @asynccontextmanager
    async def running() -> Any:
        # `mleg serve`'s Server: the Telegram front-end, the "telegram" and "email" senders, no jobs.
        channels = load_channels(ctx, {"telegram", "email"})
        assert set(channels) == {"telegram", "email"}
        server = serve.Server(ctx, run_jobs=False)
        try:
            with mock.patch.object(serve, "load_channels", lambda _ctx: channels), \
                    mock.patch.object(serve, "load_frontends", lambda _ctx: [TelegramFrontend(ctx)]):
                await server.start()
            try:
                yield server
            finally:
                await server.stop()
            with Session(engine) as session:  # the journeys really ended in applications
                made = session.exec(select(sa.func.count()).select_from(ApplicationRow)).one()
            if made != chats:
                raise RuntimeError(f"{made} applications made by {chats} journeys")
        finally:
            engine.dispose()

    return running()


Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Awaitable[None]]


def _echo_bot(token: str, base_url: str, handler: Handler | None = None,
              on_start: Callable[[Application], Awaitable[None]] | None = None  # type: ignore[type-arg]
              ) -> AbstractAsyncContextManager[Any]:
    from contextlib import asynccontextmanager

    async def echo(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text(update.message.text or "?")

    @asynccontextmanager
    async def running() -> Any:
        app: Application = ApplicationBuilder().token(token).base_url(base_url).build()  # type: ignore[type-arg]
        app.add_handler(MessageHandler(filters.ALL, handler or echo))
        async with app:
            if on_start is not None:
                await on_start(app)
            assert app.updater is not None
            await app.updater.start_polling(poll_interval=0.0, timeout=10)
            await app.start()
            try:
                yield app
            finally:
                await app.updater.stop()
                await app.stop()

    return running()


DURABLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS received (update_id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reply (
    id INTEGER PRIMARY KEY, update_id INTEGER NOT NULL UNIQUE REFERENCES received (update_id),
    chat_id INTEGER NOT NULL, text TEXT NOT NULL, sent_at REAL
);
CREATE INDEX IF NOT EXISTS reply_unsent ON reply (id) WHERE sent_at IS NULL;
"""


def _durable_echo_bot(tmp: Path, token: str, base_url: str) -> AbstractAsyncContextManager[Any]:
    """The second baseline: the bare echo bot plus what losing nothing and sending nothing twice
    across a kill -9 takes, and no more (the targets are set against it: updates/s >= 0.7 of it,
    p99 latency <= 2x its p99; the bare echo's ratio is printed beside).

    Per update: BEGIN IMMEDIATE; INSERT the update (its id unique: a redelivered one stops here)
    and its reply; COMMIT; send; UPDATE the reply's sent_at (autocommit). On start, replies
    never recorded sent (a kill between commit and "sent") are sent first. SQLite set up as
    the product sets it up (WAL, synchronous=FULL), the stdlib's sqlite3 called on the event
    loop (each statement well under a millisecond), PTB's defaults as the bare echo bot's.
    """
    import sqlite3
    from contextlib import asynccontextmanager

    db = sqlite3.connect(tmp / "durable-echo.db", isolation_level=None, check_same_thread=False)
    product_db._sqlite_pragmas(db, None)  # the product's own SQLite set-up: WAL, synchronous=FULL, ...
    db.executescript(DURABLE_SCHEMA)

    async def durable_echo(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        assert message is not None
        text = message.text or "?"
        db.execute("BEGIN IMMEDIATE")
        try:
            stored = db.execute("INSERT OR IGNORE INTO received (update_id, chat_id, text) VALUES (?, ?, ?)",
                                (update.update_id, message.chat_id, text)).rowcount
            reply_id = db.execute("INSERT INTO reply (update_id, chat_id, text) VALUES (?, ?, ?)",
                                  (update.update_id, message.chat_id, text)).lastrowid if stored else None
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if reply_id is None:  # handled before a restart: its reply, if unsent, went on start
            return
        await message.reply_text(text)
        db.execute("UPDATE reply SET sent_at = ? WHERE id = ?", (time.time(), reply_id))

    async def resend_unsent(app: Application) -> None:  # type: ignore[type-arg]
        for reply_id, chat_id, text in db.execute("SELECT id, chat_id, text FROM reply WHERE sent_at IS NULL"):
            await app.bot.send_message(chat_id, text)
            db.execute("UPDATE reply SET sent_at = ? WHERE id = ?", (time.time(), reply_id))

    @asynccontextmanager
    async def running() -> Any:
        try:
            async with _echo_bot(token, base_url, durable_echo, resend_unsent) as app:
                yield app
            unsent, = db.execute("SELECT count(*) FROM reply WHERE sent_at IS NULL").fetchone()
            if unsent:
                raise RuntimeError(f"the durable echo bot left {unsent} replies unsent")
        finally:
            db.close()

    return running()


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _load_generator(conn: Connection, kind: str, chats: int, concurrency: int) -> None:
    """The child process: the stand-in plus the students driving it (Telegram's side of the wire)."""
    relay = SmtpRelay(max_recorded=10 * chats + 100)  # the students' mail server (records, relays nowhere)
    relay.start()
    with BotApiStandIn() as api:
        conn.send((api.token, api.base_url, (relay.host, relay.port)))
        conn.recv()  # the bot is up
        steps = _bot_steps() if kind == "full" else _echo_steps()
        before = len(api.calls())
        mailbox = Mailbox(relay) if kind == "full" else None
        elapsed, latencies = asyncio.run(_journeys(api, chats, concurrency, steps, mailbox))
        conn.send((elapsed, latencies, len(api.calls()) - before))  # Bot API requests, getUpdates aside
        conn.recv()  # the bot has stopped
    relay.stop()


async def _measure(kind: str, tmp: Path, chats: int, concurrency: int) -> tuple[float, list[float], int, float]:
    """Telegram's side runs in a child process, so the stand-in does not share the bot's interpreter (GIL).

    Also returns the CPU seconds this process (the bot, all its threads) used during the journeys:
    on a machine other work loads, CPU per update moves far less than updates/s does.
    """
    parent, child = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_load_generator, args=(child, kind, chats, concurrency), daemon=True)
    process.start()
    try:
        token, base_url, smtp = await asyncio.to_thread(parent.recv)
        bot = (_full_bot(tmp, token, base_url, smtp, chats) if kind == "full"
               else _durable_echo_bot(tmp, token, base_url) if kind == "durable" else _echo_bot(token, base_url))
        async with bot:
            cpu_before = time.process_time()
            parent.send("go")
            elapsed, latencies, requests = await asyncio.to_thread(parent.recv)
            cpu = time.process_time() - cpu_before
        parent.send("stop")
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
    return elapsed, latencies, requests, cpu


async def run(chats: int, concurrency: int, only_full: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if only_full:  # for a profiler
            elapsed, latencies, _, cpu = await _measure("full", Path(tmp), chats, concurrency)
            print(f"full bot: {len(latencies)} updates in {elapsed:.2f} s, {len(latencies) / elapsed:.1f} updates/s, "
                  f"CPU {cpu / len(latencies) * 1000:.2f} ms per update")
            return
        echo_time, echo_lat, echo_requests, echo_cpu = await _measure("echo", Path(tmp), chats, concurrency)
        durable_time, durable_lat, durable_requests, durable_cpu = await _measure("durable", Path(tmp), chats,
                                                                                 concurrency)
        full_time, full_lat, full_requests, full_cpu = await _measure("full", Path(tmp), chats, concurrency)
    echo_rate, full_rate = len(echo_lat) / echo_time, len(full_lat) / full_time
    print(f"chat throughput, {chats} whole journeys x {len(_bot_steps())} updates (/start to an application, "
          f"the chat code read from its e-mail), {concurrency} chats at once, stand-in without limits:")
    for name, n, elapsed, rate, lat, requests, cpu in (
            ("bare PTB echo bot", len(echo_lat), echo_time, echo_rate, echo_lat, echo_requests, echo_cpu),
            ("durable echo bot ", len(durable_lat), durable_time, len(durable_lat) / durable_time, durable_lat,
             durable_requests, durable_cpu),
            ("full bot (serve) ", len(full_lat), full_time, full_rate, full_lat, full_requests, full_cpu)):
        print(f"  {name}  {n:6d} updates {elapsed:7.2f} s {rate:8.1f} updates/s   latency p50 "
              f"{_quantile(lat, 0.5) * 1000:7.1f} ms  p99 {_quantile(lat, 0.99) * 1000:7.1f} ms   "
              f"{requests / n:4.2f} Bot API requests per update   CPU {cpu / n * 1000:5.2f} ms per update")
    durable_rate = len(durable_lat) / durable_time
    p99_full, p99_durable = _quantile(full_lat, 0.99), _quantile(durable_lat, 0.99)
    print(f"  ratio full/durable echo  {full_rate / durable_rate:5.2f} updates/s   "
          + verdict("P1 chat: full bot / durable echo, updates/s", full_rate / durable_rate, ">=", 0.7))
    print(f"  p99 full/durable echo    {p99_full / p99_durable:5.2f} x latency     "
          + verdict("P1 chat: full bot p99 / durable echo p99", p99_full / p99_durable, "<=", 2.0))
    print(f"  ratio full/bare echo     {full_rate / echo_rate:5.2f} updates/s   (no target: the bare echo stores"
          f" nothing; durable/bare {durable_rate / echo_rate:.2f})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--only-full", action="store_true", help="skip the echo bot (to profile the full one)")
    args, _ = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args.chats, args.concurrency, args.only_full))


if __name__ == "__main__":
    main()
