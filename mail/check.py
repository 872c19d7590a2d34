"""`mleg mail check`: log in to the support mailbox (IMAP) and to SMTP as `mleg serve` would, and say what happened.

Nothing is sent and nothing is read or flagged: IMAP selects the mailbox read-only (EXAMINE)
and counts its messages, SMTP logs in and quits. Each outcome is also recorded for
`mleg status`, like the server's own logins.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import aiosmtplib

from core.app.context import AppContext
from core.app.health import HealthRecorder
from core.app.plugins import CheckResult
from mail.channel import SmtpChannel
from mail.frontend import MailFrontend
from mail.imap import COMMAND_TIMEOUT
from mail.oauth import MailLoginError, TokenError

__all__ = ["check_mail"]

_EXISTS = re.compile(rb"^(\d+) EXISTS")


async def _check_imap(ctx: AppContext) -> CheckResult:
    s = ctx.settings.imap
    where = f"IMAP {s.host}:{s.port} ({s.security}, {s.auth})"
    if not s.host:
        return CheckResult("imap", None, "not configured (MLEG_IMAP__HOST)")
    reader = MailFrontend(ctx)
    try:
        imap = await reader.connect()
    except (TokenError, MailLoginError) as exc:
        return CheckResult("imap", False, f"{where}: {exc}")
    except Exception as exc:
        reader.health.record("imap.login", False, f"{type(exc).__name__}: {exc}")
        return CheckResult("imap", False, f"{where}: {type(exc).__name__}: {exc or 'no answer in time'}")
    try:
        response = await asyncio.wait_for(imap.examine(s.mailbox), COMMAND_TIMEOUT)
        if response.result != "OK":
            return CheckResult("imap", False, f"{where}: logged in as {s.username}, but {s.mailbox} cannot be "
                                              f"opened: {b' '.join(bytes(x) for x in response.lines).decode()}")
        count = next((int(m.group(1)) for line in response.lines
                      if (m := _EXISTS.match(bytes(line)))), 0)
        if s.auth != "xoauth2":
            reader.health.record("imap.login", True, f"password as {s.username}")
        idle = "IDLE" if imap.has_capability("IDLE") else f"no IDLE: polling every {s.poll_interval_seconds:.0f} s"
        return CheckResult("imap", True, f"{where}: logged in as {s.username}; {s.mailbox} holds {count} "
                                         f"message(s); {idle}")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(imap.logout(), 5)


async def _check_smtp(ctx: AppContext) -> CheckResult:
    s = ctx.settings.smtp
    if not s.host:
        return CheckResult("smtp", None,
                           f"not configured (MLEG_SMTP__HOST): e-mail goes to {ctx.settings.maildir_path}")
    where = f"SMTP {s.host}:{s.port} ({s.security}, {s.auth})"
    channel = SmtpChannel(ctx.settings, ctx.clock)
    # Not MailFrontend(ctx).health: building a reader loads the FAQ and trains the understanding.
    channel.health = HealthRecorder(ctx.engine, ctx.clock)
    client = channel.client()
    try:
        async with client:
            how = await channel.login(client)
            if s.auth != "xoauth2" and s.username and s.password:
                channel.record_login(True, how)
            return CheckResult("smtp", True, f"{where}: logged in, {how}; sender {s.sender}")
    except (TokenError, MailLoginError) as exc:
        channel.record_login(False, str(exc))
        return CheckResult("smtp", False, f"{where}: {exc}")
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        channel.record_login(False, f"{type(exc).__name__}: {exc}")
        return CheckResult("smtp", False, f"{where}: {type(exc).__name__}: {exc}")


async def check_mail(ctx: AppContext) -> list[CheckResult]:
    """The entry point `mleg.checks: mail`."""
    return [await _check_imap(ctx), await _check_smtp(ctx)]

