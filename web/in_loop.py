"""The console served by uvicorn on the running event loop: `mleg web`, and the child process of
`mleg serve` (web.console_process), each run it this way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn

from core.app.context import AppContext
from web.app import build_app

__all__ = ["InLoopConsole"]


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: `mleg serve` owns SIGTERM/SIGINT and stops us in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


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
