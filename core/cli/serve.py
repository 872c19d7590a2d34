"""`mleg serve`: run the configured front-ends, the outbox drainers and the lifecycle jobs."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from core.app.errors import ConfigurationError
from core.app.serve import Server
from core.app.settings import Settings, load_settings
from core.cli.common import build_context, friendly_errors

__all__ = ["check_email_delivery", "serve_command"]


def check_email_delivery(settings: Settings) -> None:
    """In production e-mail must leave over SMTP: the local Maildir is the demo's mailbox.

    Without MLEG_SMTP__HOST the e-mail sender (mail.channel.make_email_channel) writes every
    message into the local Maildir (in the data folder) and records it as sent: activation codes and QR codes in clear
    in a folder on the server, and students waiting for a mail that never leaves it.
    """
    if settings.mode == "production" and not settings.smtp.host:
        raise ConfigurationError(
            "MLEG_SMTP__HOST is not set: in production e-mail (activation codes) must go out over SMTP, "
            f"not into the local Maildir {settings.maildir_path}. Set MLEG_SMTP__HOST (see README \"Configuration\"), "
            "or run with MLEG_MODE=demo for a demonstration."
        )


@friendly_errors
def serve_command(
    no_jobs: Annotated[bool, typer.Option("--no-jobs", help="Do not run the lifecycle jobs here.")] = False,
) -> None:
    """Run everything that is configured until SIGTERM/SIGINT.

    Telegram starts when MLEG_TELEGRAM__TOKEN is set, the support mailbox when MLEG_IMAP__HOST is
    set; e-mail goes out over SMTP (MLEG_SMTP__HOST, required in production; in demo mode without
    it, into the Maildir in the data folder).
    """
    # Before the database is opened (or a fresh one created): a refused start changes nothing.
    check_email_delivery(load_settings())
    ctx = build_context()
    asyncio.run(Server(ctx, run_jobs=not no_jobs).run_until_signalled())
