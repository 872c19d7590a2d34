"""The web console of `mleg serve` in a child process of its own, beside the bot's.

Staff polling the inbox, rendering pages and Prometheus scraping /metrics cost CPU. In the
bot's process they took the chat's interpreter lock and event loop (bench.web_console: the
chat kept 0.86 of its rate alone with 50 staff polling); a thread with its own loop still
shares the lock. A child process shares only the database, which both sides already use
as the one state (SQLite in WAL mode, or PostgreSQL).

What crosses the pipe between the two:
- child to parent: ("started",) or ("failed", text) once; then channel names, whenever the
  console queued something (a reply, a staff-room note), so the parent's drainers send it at
  once (AppContext.outbox_changed) rather than at their next idle poll;
- parent to child: "stop". The child also stops on SIGTERM (systemd signals the whole group)
  and when the pipe breaks (the parent died); it ignores SIGINT, which a terminal's Ctrl-C
  sends to the whole group: the parent stops it in order.

A child that ends on its own (a crash, the OOM killer) is started again after a pause that grows
while it keeps failing (RESTART_PAUSES_SECONDS), so staff get their console back without an
operator; the bot and the mailbox never stop for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from multiprocessing.connection import Connection

from core.app.context import AppContext
from core.app.settings import Settings
from web.in_loop import InLoopConsole

__all__ = ["ConsoleProcess"]

log = logging.getLogger(__name__)
START_SECONDS = 60.0  # spawn, imports, the first connection; a bound on a loaded machine
STOP_SECONDS = 15.0
RESTART_PAUSES_SECONDS = (1.0, 5.0, 15.0, 60.0)
# A child that ran this long before it ended counts as a fresh failure, not one of a series.
STABLE_SECONDS = 300.0


class ConsoleProcess:
    """The parent's handle on the console's process."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._process: asyncio.subprocess.Process | None = None
        self._conn: Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._restarting: asyncio.Task[None] | None = None
        self._failures = 0  # ends in a row, each soon after its start
        self._started_at = 0.0
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        # A fresh interpreter, not a fork (the parent has threads, database and PTB, whose locks a fork
        # would copy held) and not multiprocessing's spawn (it imports the parent's __main__, the
        # whole CLI, again): `python -m web.console_process FD` with the parent's import path.
        ours, theirs = socket.socketpair()
        with theirs:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "web.console_process", str(theirs.fileno()), pass_fds=[theirs.fileno()], env=env)
        self._conn = Connection(ours.detach())
        self._conn.send(self.ctx.settings)
        first = await asyncio.to_thread(self._first_message)
        if first[0] != "started":
            await self._end_child()
            raise RuntimeError(f"the web console did not start: {first[1]}")
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._conn.fileno(), self._on_message)
        self._started_at = self._loop.time()

    def _first_message(self) -> tuple[str, ...]:
        assert self._conn is not None
        try:
            if self._conn.poll(START_SECONDS):
                message = self._conn.recv()
                return tuple(message)
        except (EOFError, OSError):
            return ("failed", "its process exited")
        return ("failed", f"no answer within {START_SECONDS:g} s")

    def _on_message(self) -> None:
        assert self._conn is not None and self._loop is not None
        try:
            while self._conn.poll():
                channel = self._conn.recv()
                self.ctx.outbox_changed(str(channel))
        except (EOFError, OSError):
            self._loop.remove_reader(self._conn.fileno())
            self._restarting = self._loop.create_task(self._restart(), name="web-console-restart")

    async def _restart(self) -> None:
        """The child ended on its own: start it again, pausing longer while it keeps failing."""
        assert self._process is not None and self._conn is not None and self._loop is not None
        code = await self._process.wait()
        self._conn.close()
        self._process = self._conn = None
        ran = self._loop.time() - self._started_at
        self._failures = 1 if ran >= STABLE_SECONDS else self._failures + 1
        while True:
            pause = RESTART_PAUSES_SECONDS[min(self._failures, len(RESTART_PAUSES_SECONDS)) - 1]
            log.error("the web console's process ended (exit code %s); starting it again in %g s", code, pause)
            await asyncio.sleep(pause)
            try:
                await self.start()
            except Exception as exc:  # it will be tried again; the bot and the mailbox go on meanwhile
                log.error("the web console did not start again: %s", exc)
                self._failures += 1
                code = None
                continue
            self.restarts += 1
            log.info("the web console is back (process %s)", self.pid)
            return

    async def stop(self) -> None:
        restarting, self._restarting = self._restarting, None
        if restarting is not None:
            restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await restarting
        await self._end_child()

    async def _end_child(self) -> None:
        if self._process is None or self._conn is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._conn.fileno())
            self._loop = None
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        process = self._process
        try:
            await asyncio.wait_for(process.wait(), STOP_SECONDS)
        except TimeoutError:
            log.warning("the web console did not stop within %g s; terminating it", STOP_SECONDS)
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        self._conn.close()
        self._process = self._conn = None


def main(argv: list[str]) -> None:
    """`python -m web.console_process FD`: FD is this end of the parent's socket pair."""
    conn = Connection(int(argv[1]))
    settings = conn.recv()
    run_child(settings, conn)


def run_child(settings: Settings, conn: Connection) -> None:
    """The child's entry point: the console on its own event loop until told to stop."""
    from core.app.logging_setup import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings.log_level)
    # The parent migrated the database before starting its front-ends.
    ctx = AppContext.build(settings, migrate=False)
    sending = threading.Lock()

    def tell_parent(channel: str) -> None:
        # Called from the console's worker threads, one send at a time.
        with sending, contextlib.suppress(OSError):
            conn.send(channel)

    ctx.outbox_listeners.append(tell_parent)
    try:
        asyncio.run(_serve(ctx, conn))
    finally:
        ctx.engine.dispose()


async def _serve(ctx: AppContext, conn: Connection) -> None:

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def from_parent() -> None:
        try:
            while conn.poll():
                conn.recv()  # "stop"
                stop.set()
        except (EOFError, OSError):  # the parent is gone
            stop.set()
        if stop.is_set():
            loop.remove_reader(conn.fileno())

    console = InLoopConsole(ctx)
    try:
        await console.start()
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise
    conn.send(("started",))
    loop.add_reader(conn.fileno(), from_parent)
    try:
        await stop.wait()
    finally:
        await console.stop()


if __name__ == "__main__":
    main(sys.argv)
