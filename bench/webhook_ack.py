"""Benchmark: how fast the webhook acknowledges a burst while the same server handles it.

    .venv/bin/python -m bench.webhook_ack [--updates 1000] [--concurrency 40] [--db URL]

`mleg serve` runs as a subprocess in webhook mode against the Bot API stand-in (SQLite in a
temporary folder unless --db names a PostgreSQL database, whose tables it uses as they are).
This process plays Telegram: `--concurrency` connections (Telegram opens up to 40) POST
`--updates` /start updates of as many students with the secret token. Printed: the time to
the 200 of each POST (median, 95th percentile, slowest), and how long until every student's
reply was sent. Telegram waits about a minute before it retries an update and slows down a
webhook that answers slowly; storing the update is the only work before the 200.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

from core.app.settings import PROJECT_ROOT
from core.storage.db import make_engine
from tests.servers.ports import free_port

SECRET = "bench-webhook-secret_0123456789abcdefghij"
PATH = "/telegram/hook"


def _update(update_id: int) -> bytes:
    chat = 10_000 + update_id
    user = {"id": chat, "is_bot": False, "first_name": "Ola", "language_code": "pl"}
    return json.dumps({"update_id": update_id, "message": {
        "message_id": 1, "date": int(time.time()), "text": "/start", "from": user,
        "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        "chat": {"id": chat, "type": "private", "first_name": "Ola"}}}).encode()


def _post(port: int, body: bytes) -> float:
    started = time.perf_counter()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}", data=body, method="POST", headers={
        "Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    from tests.servers.botapi import BotApiStandIn

    parser = argparse.ArgumentParser(prog="bench.webhook_ack")
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=40)
    parser.add_argument("--db", default=None, help="a PostgreSQL URL (default: SQLite in a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, BotApiStandIn(auto_deliver_webhook=False) as api:
        url = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLEG_")}
        env.update(MLEG_MODE="demo", MLEG_DATABASE_URL=url, MLEG_VAR_DIR=str(Path(tmp) / "var"),
                   MLEG_TELEGRAM__TOKEN=api.token, MLEG_TELEGRAM__API_BASE_URL=api.base_url,
                   MLEG_TELEGRAM__MESSAGES_PER_SECOND="10000", MLEG_TELEGRAM__MESSAGES_PER_CHAT_PER_SECOND="10000",
                   MLEG_TELEGRAM__WEBHOOK_URL=f"http://127.0.0.1:{port}{PATH}", MLEG_TELEGRAM__WEBHOOK_SECRET=SECRET,
                   MLEG_TELEGRAM__WEBHOOK_PORT=str(port))
        subprocess.run([sys.executable, "-m", "core.cli", "db", "upgrade"], env=env, cwd=PROJECT_ROOT, check=True,
                       capture_output=True)
        log = Path(tmp) / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "core.cli", "serve", "--no-jobs"], env=env,
                                    cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"mleg serve stopped:\n{log.read_text(errors='replace')[-3000:]}")
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.1)
            bodies = [_update(n) for n in range(1, args.updates + 1)]
            started = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                waits = sorted(pool.map(lambda body: _post(port, body), bodies))
            acked = time.perf_counter() - started
            engine = make_engine(url)
            while True:
                with engine.connect() as connection:
                    sent = connection.execute(sa.text(
                        "SELECT count(DISTINCT recipient) FROM outbox WHERE channel = 'telegram' AND status = 'sent'"
                    )).scalar()
                if sent >= args.updates:
                    break
                time.sleep(0.1)
            answered = time.perf_counter() - started
            engine.dispose()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    p95 = waits[int(0.95 * (len(waits) - 1))]
    print(f"webhook: {args.updates} updates, {args.concurrency} connections, database {url.split(':')[0]}")
    print(f"  time to 200: median {statistics.median(waits) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
          f"slowest {waits[-1] * 1000:.1f} ms; all acknowledged in {acked:.1f} s")
    print(f"  every student answered (reply sent) {answered:.1f} s after the first POST")


if __name__ == "__main__":
    main()
