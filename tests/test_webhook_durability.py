"""Webhook mode loses nothing: `mleg serve` subprocesses behind a webhook, killed -9 mid-burst.

The test plays Telegram: it POSTs updates to the servers' webhook endpoints with the secret
token, and an update answered 200 is never sent again (as Telegram does). A POST that fails
(the server is dead) goes to the other server, as a load balancer and Telegram's retry would.
Replies are read from the Bot API stand-in; what was queued, from the database.

A server killed while it sends may have sent a message and died before recording it: the
next sender sends that row again. That is the outbox's own known limit (at most one resend
per chat and kill, see tests/test_proof_chat_faults.py), not a second handling: the checks tell the
two apart (a second handling would queue a second set of replies).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.app.settings import PROJECT_ROOT
from core.messaging.sending import LEASE
from core.storage.db import make_engine
from core.storage.models import OutboxMessage, OutboxStatus
from tests.factories import TEST_SECRET, make_settings
from tests.servers.botapi import BotApiStandIn
from tests.servers.ports import free_port
from tests.support.databases import truncate_all

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]
SECRET = "webhook-secret_for-the-durability-tests_0123"
PATH = "/telegram/hook"
WAIT = 60.0
UPDATES_LOCK = "mleg:telegram-updates"  # core.jobs.leader.TELEGRAM_UPDATES_LOCK, spelled out: status shows it by it


def _update(update_id: int, chat_id: int, text: str) -> dict[str, Any]:
    user = {"id": chat_id, "is_bot": False, "first_name": "Ola", "language_code": "pl"}
    message: dict[str, Any] = {"message_id": update_id, "date": int(time.time()), "text": text, "from": user,
                               "chat": {"id": chat_id, "type": "private", "first_name": "Ola"}}
    if text.startswith("/"):
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return {"update_id": update_id, "message": message}


def _post(port: int, update: dict[str, Any]) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{PATH}", data=json.dumps(update).encode(), method="POST",
        headers={"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _deliver(ports: list[int], update: dict[str, Any]) -> int:
    """POST to the first port; one that fails (refused, not 200) is tried on the next, as Telegram retries."""
    for port in ports:
        try:
            if _post(port, update) == 200:
                return port
        except OSError:
            continue
    raise AssertionError(f"update {update['update_id']} acknowledged by no server")


class Serve:
    def __init__(self, env: dict[str, str], log: Path, name: str) -> None:
        self.env = {**env, "PGAPPNAME": name}  # which server holds a lock, as pg_stat_activity names it
        self.log, self.name = log, name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "core.cli", "serve", "--no-jobs"], env=self.env,
                                         cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=20)
        self.proc = None
        return code


def _environment(tmp_path: Path, api: BotApiStandIn, database_url: str, port: int, public_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLEG_")}
    env.update(MLEG_MODE="production", MLEG_SECRET_KEY=TEST_SECRET, MLEG_DATABASE_URL=database_url,
               MLEG_VAR_DIR=str(tmp_path / "var"), MLEG_TELEGRAM__TOKEN=api.token,
               MLEG_TELEGRAM__API_BASE_URL=api.base_url, MLEG_TELEGRAM__MESSAGES_PER_CHAT_PER_SECOND="200",
               MLEG_TELEGRAM__WEBHOOK_URL=f"http://127.0.0.1:{public_port}{PATH}",
               MLEG_TELEGRAM__WEBHOOK_SECRET=SECRET, MLEG_TELEGRAM__WEBHOOK_LISTEN="127.0.0.1",
               MLEG_TELEGRAM__WEBHOOK_PORT=str(port),
               # No mail is sent here; a closed port keeps any e-mail queued.
               MLEG_SMTP__HOST="127.0.0.1", MLEG_SMTP__PORT=str(free_port()), MLEG_SMTP__SECURITY="none")
    return env


def _expire_leases_of_the_dead(ctx: AppContext, killed_at: datetime) -> None:
    """The leases a killed server held end after core.messaging.sending.LEASE (5 min): let them end now.

    Only leases taken before the kill: the surviving server's newer ones are its own.
    """
    with ctx.engine.begin() as connection:
        connection.execute(sa.update(OutboxMessage).where(
            col(OutboxMessage.status) == OutboxStatus.SENDING,
            col(OutboxMessage.lease_until) <= killed_at + LEASE).values(lease_until=datetime.now(UTC)))


def _wait(condition: Any, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _telegram_rows(ctx: AppContext) -> list[OutboxMessage]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(OutboxMessage).where(OutboxMessage.channel == "telegram")
                                 .order_by(col(OutboxMessage.id))).all())


def _all_sent(ctx: AppContext, chats: list[int]) -> bool:
    rows = _telegram_rows(ctx)
    return {int(r.recipient) for r in rows} >= set(chats) and all(r.status == OutboxStatus.SENT for r in rows)


def _every_update_answered(ctx: AppContext, updates: list[dict[str, Any]]) -> bool:
    return {_update_of(r) for r in _telegram_rows(ctx)} >= {u["update_id"] for u in updates}


def _update_of(row: OutboxMessage) -> int:
    """reply:telegram:<chat>:tg:<update_id>:<n>: the update whose turn queued this reply."""
    return int(row.idempotency_key.split(":tg:")[1].split(":")[0])


def _check_each_handled_once_in_order(ctx: AppContext, api: BotApiStandIn, updates: list[dict[str, Any]],
                                      kills: int) -> None:
    rows = _telegram_rows(ctx)
    by_chat: dict[int, list[OutboxMessage]] = {}
    for row in rows:
        by_chat.setdefault(int(row.recipient), []).append(row)
    for chat, chat_rows in by_chat.items():
        expected = [u["update_id"] for u in updates if u["message"]["chat"]["id"] == chat]
        # Every update's turn queued its replies, each turn once, in the order Telegram numbered them.
        handled = [_update_of(r) for r in chat_rows]
        assert sorted(set(handled)) == expected, (chat, handled, expected)
        assert handled == sorted(handled), f"chat {chat}: turns out of order: {handled}"
        # Delivered in that order too: the stand-in numbers a chat's messages as it receives them.
        delivered = [int((r.external_id or ":0").rsplit(":", 1)[1]) for r in chat_rows]  # chat:message_id
        assert delivered == sorted(delivered) and 0 not in delivered, f"chat {chat}: sent out of order: {delivered}"
        # At most the message in flight to this chat when its server died (sent, not recorded) again.
        extra = len(api.sent_messages(chat)) - len(chat_rows)
        assert 0 <= extra <= kills, f"chat {chat}: {len(chat_rows)} replies queued, {extra} more sent"


@pytest.fixture
def api() -> Iterator[BotApiStandIn]:
    # Not the shared stand-in of tests/conftest.py: the test is Telegram here, it POSTs the updates itself.
    with BotApiStandIn(auto_deliver_webhook=False) as standin:
        yield standin


def test_burst_acknowledged_then_kill_9_every_student_answered_once(api: BotApiStandIn, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    port = free_port()
    serve = Serve(_environment(tmp_path, api, url, port, port), tmp_path / "serve.log", "mleg-one")
    ctx = AppContext(settings=make_settings(tmp_path, database_url=url), engine=make_engine(url))
    chats = list(range(7001, 7041))
    updates = [_update(500 + i, chat, "/start") for i, chat in enumerate(chats)]
    serve.start()
    try:
        _wait(lambda: _listening(port), "the webhook listens")
        with ThreadPoolExecutor(8) as pool:  # Telegram opens up to 40 connections at once
            assert list(pool.map(lambda u: _deliver([port], u), updates)) == [port] * len(updates)
        assert serve.kill() == -signal.SIGKILL  # every update acknowledged, most not handled yet
        _expire_leases_of_the_dead(ctx, datetime.now(UTC))
        serve.start()
        _wait(lambda: _every_update_answered(ctx, updates), "every student answered")
        _wait(lambda: _all_handled(ctx), "every stored update handled")
        _wait(lambda: _all_sent(ctx, chats), "every reply sent")
        assert serve.kill(signal.SIGTERM) == 0
    finally:
        if serve.proc is not None:
            serve.kill()
    _check_each_handled_once_in_order(ctx, api, updates, kills=1)
    ctx.engine.dispose()


@pytest.fixture
def pg_url(postgres_database: str) -> str:
    engine = make_engine(postgres_database)
    truncate_all(engine)
    engine.dispose()
    return postgres_database


def _updates_lock_holder(ctx: AppContext) -> str | None:
    from core.jobs.leader import advisory_key

    key = advisory_key(UPDATES_LOCK) & 0xFFFF_FFFF_FFFF_FFFF
    with ctx.engine.connect() as connection:
        return connection.execute(sa.text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = :high AND l.objid::bigint = :low"
        ), {"high": key >> 32, "low": key & 0xFFFF_FFFF}).scalar()


@pytest.mark.postgres
def test_two_servers_on_postgresql_one_killed_mid_burst(api: BotApiStandIn, tmp_path: Path, pg_url: str) -> None:
    """Updates POSTed alternately to two servers, the one handling them killed -9 half-way."""
    ports = [free_port(), free_port()]
    servers = [Serve(_environment(tmp_path, api, pg_url, port, ports[0]), tmp_path / f"serve-{n}.log", f"mleg-{n}")
               for n, port in zip("ab", ports, strict=True)]
    ctx = AppContext(settings=make_settings(tmp_path, database_url=pg_url), engine=make_engine(pg_url))
    chats = list(range(8001, 8011))
    texts = ["/start", "dzień dobry", "/start", "pomocy"]
    # Telegram numbers updates as they come: the chats' messages interleave.
    updates = [_update(900 + 10 * turn + n, chat, texts[turn]) for turn in range(4) for n, chat in enumerate(chats)]

    def deliver_round(turn: int) -> None:
        # A chat's next message only after its previous one was acknowledged; the chats at once;
        # each chat's messages alternate between the two servers.
        batch = updates[10 * turn:10 * turn + 10]
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(lambda i: _deliver([ports[(i + turn) % 2], ports[(i + turn + 1) % 2]], batch[i]),
                          range(len(batch))))

    for server in servers:
        server.start()
    try:
        _wait(lambda: all(_listening(p) for p in ports), "both webhooks listen")
        deliver_round(0)
        deliver_round(1)
        holder = _updates_lock_holder(ctx)
        killed = next((s for s in servers if s.name == holder), servers[0])
        assert killed.kill() == -signal.SIGKILL  # mid-burst, the server handling the updates
        killed_at = datetime.now(UTC)
        survivor = 1 - servers.index(killed)
        deliver_round(2)  # what goes to the dead one is refused and goes to the survivor
        deliver_round(3)
        time.sleep(1.0)  # the survivor's own deliveries in flight at the kill are recorded
        _expire_leases_of_the_dead(ctx, killed_at)
        _wait(lambda: _every_update_answered(ctx, updates), "every update answered")
        _wait(lambda: _updates_lock_holder(ctx) == servers[survivor].name, "the survivor took over")
        _wait(lambda: _all_handled(ctx), "every stored update handled")
        _wait(lambda: _all_sent(ctx, chats), "every reply sent")
        assert servers[survivor].kill(signal.SIGTERM) == 0
    finally:
        for server in servers:
            if server.proc is not None:
                server.kill()
    _check_each_handled_once_in_order(ctx, api, updates, kills=1)
    ctx.engine.dispose()


def _all_handled(ctx: AppContext) -> bool:
    with ctx.engine.connect() as connection:
        waiting = connection.execute(sa.text(
            "SELECT count(*) FROM stored_update WHERE handled_at IS NULL OR payload IS NOT NULL")).scalar()
        stored = connection.execute(sa.text("SELECT count(*) FROM stored_update")).scalar()
    return bool(stored) and waiting == 0
