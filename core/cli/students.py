"""`mleg students`: staff actions on one student of the register (lifting an identification lock)."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer
from sqlmodel import select

from core.app.errors import NotFoundError
from core.cli.common import build_context, friendly_errors
from core.security import lockout
from core.storage.db import unit_of_work
from core.storage.models import Student

app = typer.Typer(help="Students of the register: staff actions.", no_args_is_help=True)


@app.command("unlock")
@friendly_errors
def unlock_command(
    album: Annotated[str, typer.Argument(help="The student's album number, as in the register.")],
    by: Annotated[str | None, typer.Option(help="Who does this (for the audit trail).")] = None,
) -> None:
    """Lift the lock on linking a chat to this student (too many wrong PESEL or album tries).

    The counts against the student go (their PESEL, album and ELS number, their chat code);
    the accounts that made the wrong tries stay locked. Recorded in the audit trail.
    """
    ctx = build_context()
    actor = f"staff:{by or getpass.getuser()}"
    with unit_of_work(ctx.engine) as session:
        student = session.exec(select(Student).where(Student.album == album.strip())).first()
        if student is None:
            raise NotFoundError(f"no student with album {album.strip()!r} in the register")
        cleared = lockout.unlock(ctx, session, student, actor=actor)
    if cleared:
        typer.echo(f"album {student.album}: lock lifted ({cleared} failed attempt(s) cleared)")
    else:
        typer.echo(f"album {student.album}: no failed attempts against this student; nothing to lift")
