"""`mleg serve`: run the configured front-ends, the outbox drainers and the lifecycle jobs."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from core.cli.common import build_context, friendly_errors
from core.serve import Server


@friendly_errors
def serve_command(
    no_jobs: Annotated[bool, typer.Option("--no-jobs", help="Do not run the lifecycle jobs here.")] = False,
) -> None:
    """Run everything that is configured until SIGTERM/SIGINT.

    Telegram starts when MLEG_TELEGRAM__TOKEN is set, the support mailbox when MLEG_IMAP__HOST is
    set; e-mail goes out over SMTP (or into var/maildir without MLEG_SMTP__HOST).
    """
    ctx = build_context()
    asyncio.run(Server(ctx, run_jobs=not no_jobs).run_until_signalled())
