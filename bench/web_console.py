"""Benchmark: the chat's P1 throughput with and without 50 staff polling the web console.

    .venv/bin/python -m bench.web_console [--chats 500] [--concurrency 100] [--staff 50] [--poll-seconds 2]
                                          [--in-loop]

Runs bench.chat_throughput's full bot (`mleg serve` in this process, SQLite) twice on the same
journeys: once alone, once with the web console (web.frontend.WebFrontend) started as `mleg serve`
starts it (in a child process of its own; `--in-loop`: on the bot's event loop, as before) and
`--staff` signed-in sessions polling the inbox's rows (as htmx does) every
`--poll-seconds`, each also loading the whole inbox page every tenth poll, and one Prometheus
scraper reading `/metrics` every 5 s. The pollers run in a child process of their own (they
are the staff's browsers, not the server). Prints both rates, the ratio with/without
(target: at least 0.9, the chat losing no more than 10%), the console's answers by status and,
when it has a process of its own, the CPU time that process spent per answer.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import re
import resource
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.chat_throughput import _full_bot, _load_generator, _quantile
from core.app.context import AppContext
from core.storage.db import unit_of_work
from tests.servers.ports import free_port

PASSWORD = "bench password 0123456789"


def _pollers(conn: Connection, base: str, tokens: list[str], cookie: str, poll_seconds: float) -> None:
    """The child process: one polling loop per staff session, plus a metrics scraper, until told to stop."""
    import httpx

    async def run() -> Counter[str]:
        answers: Counter[str] = Counter()
        stop = asyncio.Event()

        async def poll(token: str) -> None:
            async with httpx.AsyncClient(base_url=base, cookies={cookie: token}, timeout=30) as client:
                n, seen = 0, ""
                while not stop.is_set():
                    # As htmx does: the rows' URL carries the fingerprint of what the page shows.
                    path = "/inbox" if n % 10 == 0 else f"/inbox/rows?seen={seen}"
                    try:
                        response = await client.get(path)
                        found = re.search(r"seen=([^\"&]+)", response.text)
                        seen = found.group(1) if found else seen
                        answers[f"{path.split('?')[0]} {response.status_code}"] += 1
                    except httpx.HTTPError as exc:
                        answers[f"{path} {type(exc).__name__}"] += 1
                    n += 1
                    await asyncio.sleep(poll_seconds)

        async def scrape() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                while not stop.is_set():
                    answers[f"/metrics {(await client.get('/metrics')).status_code}"] += 1
                    await asyncio.sleep(5)

        tasks = [asyncio.create_task(poll(token)) for token in tokens] + [asyncio.create_task(scrape())]
        await asyncio.to_thread(conn.recv)  # "stop"
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return answers

    conn.send("ready")
    conn.send(asyncio.run(run()))


def _sessions(ctx: AppContext, count: int) -> list[str]:
    from core.support import staff
    from web import auth

    with unit_of_work(ctx.engine) as session:
        staff.add_account(ctx, session, "bench", PASSWORD, role=staff.Role.AGENT, actor="bench")
    ctx.settings.web.sign_in_attempts_per_address = ctx.settings.web.sign_in_attempts_per_login = 10 * count
    tokens = [auth.sign_in(ctx, "bench", PASSWORD, "", f"10.0.0.{n}").token for n in range(count)]
    return [t for t in tokens if t]


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0 without one."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def _serving(tmp: Path, token: str, base_url: str, smtp: tuple[str, int], chats: int,
                   web_port: int | None, in_loop: bool) -> AsyncIterator[tuple[Any, int | None]]:
    """bench.chat_throughput's full bot (the whole journey, e-mail included), with the console beside it;
    yields the server and the console's process id (None: no console, or on the bot's loop)."""
    async with _full_bot(tmp, token, base_url, smtp, chats, web_port=web_port) as server:
        web = None
        pid = None
        if web_port is not None:
            from web.frontend import WebFrontend

            server.ctx.settings.web.own_process = not in_loop
            web = WebFrontend(server.ctx)
            await web.start()
            pid = getattr(web._runner, "pid", None)
        try:
            yield server, pid
        finally:
            if web is not None:
                await web.stop()


async def _measure(tmp: Path, chats: int, concurrency: int, staff: int, poll_seconds: float,
                   with_web: bool, in_loop: bool) -> tuple[float, list[float], Counter[str], float, float]:
    spawn = multiprocessing.get_context("spawn")
    parent, child = spawn.Pipe()
    generator = spawn.Process(target=_load_generator, args=(child, "full", chats, concurrency), daemon=True)
    generator.start()
    pollers = None
    answers: Counter[str] = Counter()
    try:
        token, base_url, smtp = await asyncio.to_thread(parent.recv)
        port = free_port() if with_web else None
        run_dir = tmp / ("with-console" if with_web else "alone")
        run_dir.mkdir()
        async with _serving(run_dir, token, base_url, smtp, chats, port, in_loop) as (server, console_pid):
            ctx = server.ctx
            tokens = _sessions(ctx, staff) if with_web else []
            cpu_before = _cpu_seconds(console_pid)  # from the pollers' first request to their last
            if with_web:
                poll_parent, poll_child = spawn.Pipe()
                from web.desk import Desk

                pollers = spawn.Process(target=_pollers, daemon=True, args=(
                    poll_child, f"http://127.0.0.1:{port}", tokens, Desk(ctx).session_cookie, poll_seconds))
                pollers.start()
                await asyncio.to_thread(poll_parent.recv)  # "ready"
                await asyncio.sleep(poll_seconds)  # every session polling before the chats start
            own_before = _own_cpu_seconds()
            parent.send("go")
            elapsed, latencies, _ = await asyncio.to_thread(parent.recv)
            own_cpu = _own_cpu_seconds() - own_before
            if pollers is not None:
                poll_parent.send("stop")
                answers = await asyncio.to_thread(poll_parent.recv)
            console_cpu = _cpu_seconds(console_pid) - cpu_before
        parent.send("stop")
    finally:
        for process in (generator, pollers):
            if process is not None:
                process.join(timeout=30)
                if process.is_alive():
                    process.kill()
    return elapsed, latencies, answers, console_cpu, own_cpu


def _own_cpu_seconds() -> float:
    """CPU time of this process (the bot, and the console when on its loop), all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(chats: int, concurrency: int, staff: int, poll_seconds: float, in_loop: bool) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for with_web in (False, True):
            started = time.perf_counter()
            results[with_web] = await _measure(Path(tmp), chats, concurrency, staff, poll_seconds, with_web,
                                               in_loop)
            logging.info("run %s took %.1f s", with_web, time.perf_counter() - started)
    print(f"chat throughput with the web console ({'on the bot loop' if in_loop else 'own process'}), "
          f"{chats} whole journeys, {concurrency} at once; {staff} staff sessions polling every {poll_seconds:g} s:")
    rates = {}
    for with_web, (elapsed, latencies, _, _, _) in results.items():
        rates[with_web] = len(latencies) / elapsed
        print(f"  {'with console ' if with_web else 'chat alone   '} {len(latencies):6d} updates {elapsed:7.2f} s "
              f"{rates[with_web]:8.1f} updates/s   latency p50 {_quantile(latencies, 0.5) * 1000:7.1f} ms  "
              f"p99 {_quantile(latencies, 0.99) * 1000:7.1f} ms")
    print(f"  ratio with/without {rates[True] / rates[False]:5.2f}   (target >= 0.9)")
    # The bot's CPU per update hardly depends on what else the machine runs; the rates above do.
    per_update = {w: 1000 * r[4] / max(1, len(r[1])) for w, r in results.items()}
    print(f"  bot process CPU per update: alone {per_update[False]:.2f} ms, with console {per_update[True]:.2f} ms "
          f"(ratio alone/with {per_update[False] / per_update[True]:.2f})")
    answers, console_cpu = results[True][2], results[True][3]
    print("  console answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())))
    if console_cpu:
        # From the pollers' first answer to their last, a little longer than the chats ran: the share of a
        # core is an upper bound.
        print(f"  console process CPU {console_cpu:.1f} s, {1000 * console_cpu / max(1, sum(answers.values())):.2f} "
              f"ms per answer, {100 * console_cpu / results[True][0]:.0f}% of one core while the chats ran")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--staff", type=int, default=50)
    parser.add_argument("--poll-seconds", type=float, default=2.0)
    parser.add_argument("--in-loop", action="store_true", help="The console on the bot's event loop (as before).")
    args, _ = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args.chats, args.concurrency, args.staff, args.poll_seconds, args.in_loop))


if __name__ == "__main__":
    main()
