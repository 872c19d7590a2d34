"""The web console as a front-end of `mleg serve` (entry point `mleg.frontends` "web") and of `mleg web`.

Started when MLEG_WEB__PORT is set; listens on MLEG_WEB__HOST (default 127.0.0.1), meant to
sit behind the university's reverse proxy, whose X-Forwarded-For/-Proto are believed only
from MLEG_WEB__FORWARDED_ALLOW_IPS. Under `mleg serve` it runs in a child process of its own
(web.console_process, MLEG_WEB__OWN_PROCESS, default on) so staff's pages never take the
chat's CPU time; `mleg web`, the console alone, runs it on its own event loop.
"""

from __future__ import annotations

import logging

from core.app.context import AppContext
from web.console_process import ConsoleProcess
from web.in_loop import InLoopConsole

__all__ = ["WebFrontend"]

log = logging.getLogger(__name__)


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
