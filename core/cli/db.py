"""`mleg db`: schema migrations."""

from __future__ import annotations

import typer

from core.app.logging_setup import configure_logging
from core.app.settings import load_settings
from core.cli.common import friendly_errors, masked_url, open_database
from core.storage.db import current_revision, upgrade

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
@friendly_errors
def upgrade_command() -> None:
    """Apply every pending migration (safe to run again)."""
    settings = load_settings()
    configure_logging("WARNING")
    engine = open_database(settings)
    upgrade(engine)
    shown = masked_url(settings.effective_database_url)
    typer.echo(f"database at revision {current_revision(engine)} ({shown})")
