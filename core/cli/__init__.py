"""The `mleg` command line: the operators' face of the product."""

from __future__ import annotations

import typer

from core.cli import credentials, db, jobs, mail, registry, staff, students, threads
from core.cli.chat import chat_command
from core.cli.serve import serve_command
from core.cli.status import status_command
from core.cli.understand import understand_command
from core.cli.web import web_command

__all__ = ["app", "main"]

app = typer.Typer(
    help="mLegitymacja front-end: Telegram bot, support mailbox and lifecycle jobs for the "
    "mobile student ID. Settings: MLEG_* environment variables over mleg.toml (MLEG_CONFIG_FILE, "
    "else MLEG_CONFIG_DIR's, else the shipped one).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(registry.app, name="registry")
app.add_typer(credentials.app, name="credentials")
app.add_typer(db.app, name="db")
app.add_typer(jobs.app, name="jobs")
app.add_typer(threads.app, name="threads")
app.add_typer(mail.app, name="mail")
app.add_typer(students.app, name="students")
app.add_typer(staff.app, name="staff")
app.command("status")(status_command)
app.command("chat")(chat_command)
app.command("serve")(serve_command)
app.command("understand")(understand_command)
app.command("web")(web_command)


def main() -> None:
    app()
