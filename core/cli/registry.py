"""`mleg registry`: import or sync the student register from a CSV file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.cli.common import build_context, emit_json, friendly_errors
from core.db import unit_of_work
from core.register import HEADER, import_register, parse_register

app = typer.Typer(help="The student register (rejestr studentów).", no_args_is_help=True)


@app.command("import")
@friendly_errors
def import_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="CSV file, UTF-8, comma-separated.")],
    sync: Annotated[bool, typer.Option("--sync", help=(
        "Also mark students missing from the file as removed (skreśleni) as of today."))] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and report; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import or sync the register. A file with any bad line is refused whole.

    Columns (header line required, in this order):
    album,pesel,first_name,last_name,email,study_level,status,els_number,els_valid_until,removed_on
    """
    ctx = build_context()
    rows = parse_register(
        file.read_bytes(), box=ctx.box, email_domains=ctx.settings.university.email_domains
    )
    with unit_of_work(ctx.engine) as session:
        report = import_register(
            session, rows, now=ctx.clock.now(), today=ctx.clock.today(), sync=sync,
            actor="cli", source=str(file),
        )
        if dry_run:
            session.rollback()
    summary = {
        "file": str(file), "rows": report.total, "added": report.added, "updated": report.updated,
        "unchanged": report.unchanged, "removed": report.removed, "dry_run": dry_run,
    }
    if as_json:
        emit_json(summary)
        return
    prefix = "dry run, nothing changed: " if dry_run else ""
    typer.echo(
        f"{prefix}{report.total} rows: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.removed} marked removed"
    )


@app.command("header")
def header_command() -> None:
    """Print the CSV header the import expects."""
    typer.echo(",".join(HEADER))
