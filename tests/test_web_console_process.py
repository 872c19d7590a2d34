"""`mleg serve` runs the web console in a child process of its own (web.console_process): what is
done there still wakes the parent's drainers, and SIGTERM (or the parent's death) stops both."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from core.app.context import AppContext
from tests.cli_helpers import PROJECT_ROOT, cli_environment
from tests.servers.dovecot import free_port
from tests.servers.smtp_relay import SmtpRelay
from tests.support.web_desk import PASSWORD, account, escalated_thread
from web import console_process
from web.console_process import ConsoleProcess

pytestmark = pytest.mark.process  # every test here runs `mleg` or serve as a process

WAIT = 120.0  # seconds a step may take on a loaded machine; a bound, not an assertion of speed


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and brackets, so split after the last ')'.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(check: Callable[[], bool], what: Callable[[], str]) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, what()
        time.sleep(0.1)


def _token(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def test_the_console_s_process_wakes_the_parent_s_drainers(sqlite_ctx: AppContext) -> None:
    ctx = sqlite_ctx
    ctx.settings.web.secure_cookies = False
    ctx.settings.web.port = port = free_port()
    heard: list[str] = []
    woke = asyncio.Event()

    def listener(channel: str) -> None:
        heard.append(channel)
        woke.set()

    ctx.outbox_listeners.append(listener)
    thread_id = escalated_thread(ctx)
    account(ctx, "ola")
    console = ConsoleProcess(ctx)
    await console.start()
    child = console.pid
    try:
        assert child is not None and child != os.getpid()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as client:
            health = await client.get("/healthz")
            assert health.status_code == 200
            form = _token((await client.get("/sign-in")).text)
            signed = await client.post("/sign-in", data={"csrf": form, "login": "ola", "password": PASSWORD,
                                                         "code": "", "next": "/inbox"})
            assert signed.status_code == 303
            csrf = _token((await client.get("/inbox")).text)
            answered = await client.post(f"/threads/{thread_id}/reply", data={"csrf": csrf, "text": "Tak."})
            assert answered.status_code == 303
        # The answer was queued in the child; the parent's listener (its drainers) hears of it.
        await asyncio.wait_for(woke.wait(), WAIT)
        assert heard == ["email"]
    finally:
        await console.stop()
    assert not _alive(child)


async def test_a_console_that_dies_is_started_again(sqlite_ctx: AppContext, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(console_process, "RESTART_PAUSES_SECONDS", (0.2, 0.5))
    ctx = sqlite_ctx
    ctx.settings.web.port = port = free_port()
    console = ConsoleProcess(ctx)
    await console.start()
    first = console.pid
    assert first is not None
    try:
        os.kill(first, signal.SIGKILL)  # the OOM killer, say
        deadline = time.monotonic() + WAIT
        while console.restarts == 0:
            assert time.monotonic() < deadline, "the console was not started again"
            await asyncio.sleep(0.1)
        second = console.pid
        assert second is not None and second != first and _alive(second)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as client:
            assert (await client.get("/healthz")).status_code == 200
        assert "exit code -9" in caplog.text and "starting it again" in caplog.text
    finally:
        await console.stop()
    assert not _alive(second)


def _serve(tmp_path: Path, sqlite_url: str, smtp: SmtpRelay, port: int) -> subprocess.Popen[bytes]:
    env = cli_environment(tmp_path, sqlite_url, MLEG_WEB__PORT=str(port), MLEG_WEB__SECURE_COOKIES="false",
                          MLEG_SMTP__HOST=smtp.host, MLEG_SMTP__PORT=str(smtp.port), MLEG_SMTP__SECURITY="none")
    return subprocess.Popen([sys.executable, "-m", "core.cli", "serve", "--no-jobs"], env=env, cwd=PROJECT_ROOT,
                            stdout=(tmp_path / "serve.log").open("ab"), stderr=subprocess.STDOUT)


def _console_up(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    _wait_for(answers, lambda: "the console did not answer:\n" + log.read_text())


def test_sigterm_stops_serve_and_its_console(tmp_path: Path, sqlite_url: str, smtp_server: SmtpRelay) -> None:
    port = free_port()
    process = _serve(tmp_path, sqlite_url, smtp_server, port)
    try:
        _console_up(process, port, tmp_path / "serve.log")
        children = _children(process.pid)
        assert len(children) == 1  # the console
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT) == 0, (tmp_path / "serve.log").read_text()
        _wait_for(lambda: not any(_alive(pid) for pid in children), lambda: "a child of mleg serve outlived it")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        assert "Traceback" not in (tmp_path / "serve.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()


def test_the_console_ends_when_serve_is_killed(tmp_path: Path, sqlite_url: str, smtp_server: SmtpRelay) -> None:
    port = free_port()
    process = _serve(tmp_path, sqlite_url, smtp_server, port)
    try:
        _console_up(process, port, tmp_path / "serve.log")
        children = _children(process.pid)
        process.kill()  # no chance to stop anything in order
        process.wait(timeout=WAIT)
        _wait_for(lambda: not any(_alive(pid) for pid in children), lambda: "the console outlived a killed mleg serve")
    finally:
        if process.poll() is None:
            process.kill()
