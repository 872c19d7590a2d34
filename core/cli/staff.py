"""`mleg staff`: the web console's help-desk accounts (add, list, disable, TOTP enrolment)."""

from __future__ import annotations

import getpass
import io
import sys
from typing import Annotated

import qrcode
import typer
from sqlmodel import Session

from core.cli.common import build_context, emit_json, friendly_errors, print_table
from core.storage.db import unit_of_work
from core.support import staff

app = typer.Typer(help="Staff accounts of the web console (`mleg web`).", no_args_is_help=True)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@app.command("add")
@friendly_errors
def add_command(
    login: Annotated[str, typer.Argument(help="The staff member's login (letters, digits, . _ - @).")],
    admin: Annotated[bool, typer.Option("--admin", help="Role admin (credentials, locked-out students); "
                                                         "admins must enrol TOTP (`mleg staff totp`).")] = False,
    password_stdin: Annotated[bool, typer.Option("--password-stdin",
                                                 help="Read the password from standard input.")] = False,
    sso: Annotated[bool, typer.Option("--sso", help="No password: signs in only through the university's "
                                                    "single sign-on (MLEG_WEB__OIDC__*).")] = False,
) -> None:
    """Add a staff account (role agent, or admin with --admin). The password is hashed with argon2."""
    password: str | None
    if sso:
        password = None
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise typer.BadParameter("the passwords differ")
    role = staff.Role.ADMIN if admin else staff.Role.AGENT
    ctx = build_context()
    with unit_of_work(ctx.engine) as session:
        staff.add_account(ctx, session, login, password, role=role, actor=_actor())
    typer.echo(f"staff account {login.strip().lower()} added ({role}{', single sign-on only' if sso else ''})"
               + ("; enrol its second factor with `mleg staff totp`" if admin and not sso else ""))


@app.command("list")
@friendly_errors
def list_command(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The staff accounts: role, second factor, disabled, last sign-in."""
    ctx = build_context()
    with Session(ctx.engine) as session:
        rows = [{"login": a.login, "role": a.role, "totp": a.totp_secret is not None,
                 "sso_only": a.password_hash == staff.SSO_ONLY,
                 "disabled_at": a.disabled_at, "last_sign_in_at": a.last_sign_in_at, "created_at": a.created_at}
                for a in staff.list_accounts(session)]
    if as_json:
        emit_json({"staff": rows})
        return
    print_table(["login", "role", "totp", "disabled", "last sign-in"],
                [(r["login"], r["role"], "yes" if r["totp"] else "no",
                  f"{r['disabled_at']:%Y-%m-%d %H:%M}" if r["disabled_at"] else "",
                  f"{r['last_sign_in_at']:%Y-%m-%d %H:%M}" if r["last_sign_in_at"] else "") for r in rows])


@app.command("disable")
@friendly_errors
def disable_command(login: Annotated[str, typer.Argument(help="The login to disable.")]) -> None:
    """Stop an account from signing in; its open sessions end at once."""
    ctx = build_context()
    with unit_of_work(ctx.engine) as session:
        staff.disable_account(ctx, session, login, actor=_actor())
    typer.echo(f"staff account {login.strip().lower()} disabled")


@app.command("totp")
@friendly_errors
def totp_command(login: Annotated[str, typer.Argument(help="The login to enrol.")]) -> None:
    """Enrol (or replace) the account's TOTP second factor: prints the otpauth:// URI and a QR code
    to scan with an authenticator app. Shown once; run again to replace a lost phone's."""
    ctx = build_context()
    with unit_of_work(ctx.engine) as session:
        enrolment = staff.enrol_totp(ctx, session, login, actor=_actor())
    qr = qrcode.QRCode(border=1)
    qr.add_data(enrolment.uri)
    drawn = io.StringIO()
    qr.print_ascii(out=drawn, invert=True)
    typer.echo(f"TOTP for {enrolment.login}; scan the code or enter the URI in an authenticator app:\n")
    typer.echo(drawn.getvalue())
    typer.echo(enrolment.uri)
