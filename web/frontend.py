"""The web console as a front-end of `mleg serve` (entry point `mleg.frontends` "web") and of `mleg web`.

Started when MLEG_WEB__PORT is set; listens on MLEG_WEB__HOST (default 127.0.0.1), meant to
sit behind the university's reverse proxy, whose X-Forwarded-For/-Proto are believed only
from MLEG_WEB__FORWARDED_ALLOW_IPS. Under `mleg serve` it runs in a child process of its own
(web.console_process, MLEG_WEB__OWN_PROCESS, default on) so staff's pages never take the
chat's CPU time; `mleg web`, the console alone, runs it on its own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator

import uvicorn

from core.app.context import AppContext
from web.app import build_app
from web.console_process import ConsoleProcess

__all__ = ["InLoopConsole", "WebFrontend"]

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: `mleg serve` owns SIGTERM/SIGINT and stops us in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class WebFrontend:
    name = "web"

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._runner: InLoopConsole | ConsoleProcess | None = None

    def enabled(self) -> bool:
        return self.ctx.settings.web.port is not None

    async def start(self) -> None:
        runner = ConsoleProcess(self.ctx) if self.ctx.settings.web.own_process else InLoopConsole(self.ctx)
        await runner.start()
        self._runner = runner
        web = self.ctx.settings.web
        where = f"process {runner.pid}" if isinstance(runner, ConsoleProcess) else "this process"
        log.info("web console on http://%s:%s (%s)", web.host, web.port, where)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.stop()
            self._runner = None


class InLoopConsole:
    """uvicorn serving the console on the running event loop."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        web = self.ctx.settings.web
        config = uvicorn.Config(build_app(self.ctx), host=web.host, port=web.port or 8080, proxy_headers=True,
                                forwarded_allow_ips=web.forwarded_allow_ips, log_config=None, access_log=False,
                                server_header=False, lifespan="off")
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(), name="web-console")
        while not self._server.started:
            if self._task.done():
                await self._task  # its error (the port is taken ...) is ours
                raise RuntimeError(f"the web console did not start on {web.host}:{web.port}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await asyncio.wait({self._task}, timeout=10)
        if not self._task.done():
            self._task.cancel()
