"""`mleg status`: what is configured and what the database holds, at a glance."""

from __future__ import annotations

import sqlalchemy as sa
import typer
from sqlmodel import Session, col, select

from core.cli.common import build_context, friendly_errors
from core.models import Credential, InboundMail, OutboxMessage, Student, SupportThread


@friendly_errors
def status_command() -> None:
    """Show the configuration (secrets hidden) and counts of students, credentials, outbox."""
    ctx = build_context()
    s = ctx.settings
    typer.echo(f"mode            {s.mode}")
    typer.echo(f"database        {ctx.engine.url.render_as_string()}")
    typer.echo(f"policy          {s.policy}")
    typer.echo(f"university      {s.university.name} ({', '.join(s.university.email_domains)})")
    typer.echo(f"telegram        {'configured' if s.telegram.token else 'not configured'}")
    smtp = f"{s.smtp.host}:{s.smtp.port} ({s.smtp.security})" if s.smtp.host else (
        f"not configured: e-mail goes to the local Maildir {s.maildir_path}")
    typer.echo(f"smtp            {smtp}")
    imap = f"{s.imap.host}:{s.imap.port} {s.imap.mailbox}" if s.imap.host else "not configured"
    typer.echo(f"support mailbox {imap}")
    with Session(ctx.engine) as session:
        def count(query: sa.Select[tuple[int]]) -> int:
            return int(session.exec(query).one())  # type: ignore[call-overload]

        students = count(select(sa.func.count()).select_from(Student))
        typer.echo(f"students        {students}")
        for state, number in session.exec(
            select(Credential.state, sa.func.count()).group_by(col(Credential.state))
        ).all():
            typer.echo(f"credentials     {state}: {number}")
        for status, number in session.exec(
            select(OutboxMessage.status, sa.func.count()).group_by(col(OutboxMessage.status))
        ).all():
            typer.echo(f"outbox          {status}: {number}")
        open_threads = count(
            select(sa.func.count()).select_from(SupportThread).where(SupportThread.status != "closed")
        )
        typer.echo(f"open threads    {open_threads}")
        quarantined = count(
            select(sa.func.count()).select_from(InboundMail).where(InboundMail.status == "quarantined")
        )
        typer.echo(f"quarantined     {quarantined} support e-mail(s) kept raw for staff (mleg threads list)")
