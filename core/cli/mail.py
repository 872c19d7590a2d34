"""`mleg mail check`: prove the mail settings work, before students depend on them."""

from __future__ import annotations

import asyncio

import typer

from core.app.plugins import load_check
from core.cli.common import build_context, emit_json, friendly_errors

app = typer.Typer(help="The mail connections (support mailbox over IMAP, outgoing SMTP).", no_args_is_help=True)


@app.command("check")
@friendly_errors
def check_command(as_json: bool = typer.Option(False, "--json", help="One JSON object per connection.")) -> None:
    """Log in to IMAP and SMTP as `mleg serve` would (password or OAuth2), read nothing, send nothing.

    Exit 0 when every configured connection works, 1 when one does not.
    """
    ctx = build_context()
    check = load_check("mail")
    if check is None:
        typer.echo("error: the mail front-end is not installed (entry point mleg.checks: mail)", err=True)
        raise typer.Exit(2)
    results = asyncio.run(check(ctx))
    if as_json:
        emit_json([{"connection": r.name, "ok": r.ok, "detail": r.detail} for r in results])
    else:
        for r in results:
            state = "ok" if r.ok else ("--" if r.ok is None else "FAILED")
            typer.echo(f"{r.name:<5} {state:<7}{r.detail}")
    if any(r.ok is False for r in results):
        raise typer.Exit(1)
