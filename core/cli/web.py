"""`mleg web`: the staff web console alone (no bot, mailbox, drainers or jobs).

The console is a front-end of its own (package web/), found through the `mleg.frontends`
entry point "web" as `mleg serve` finds it; core does not import it.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from core.app.errors import ConfigurationError
from core.app.plugins import load_frontend
from core.cli.common import build_context, friendly_errors

__all__ = ["web_command"]


async def _run(frontend: object) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await frontend.start()  # type: ignore[attr-defined]
    try:
        await stop.wait()
    finally:
        await frontend.stop()  # type: ignore[attr-defined]


@friendly_errors
def web_command(
    host: Annotated[str | None, typer.Option(help="Listen address (default MLEG_WEB__HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default MLEG_WEB__PORT, else 8080).")] = None,
) -> None:
    """Run the staff web console until SIGTERM/SIGINT. Answers are sent by `mleg serve`."""
    ctx = build_context()
    ctx.settings.web.host = host or ctx.settings.web.host
    ctx.settings.web.port = port or ctx.settings.web.port or 8080
    ctx.settings.web.own_process = False  # the console is all this process runs
    frontend = load_frontend(ctx, "web")
    if frontend is None:
        raise ConfigurationError("the web console (package web/) is not installed")
    asyncio.run(_run(frontend))
