"""`mleg registry`: import or sync the student register from a CSV file."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated, Any

import typer

from core.app.errors import MassRemovalError, MlegError, RegisterImportError
from core.cli.common import build_context, emit_json, friendly_errors
from core.storage.db import unit_of_work
from core.students.register import ImportReport, import_register
from core.students.register_csv import HEADER, parse_register

app = typer.Typer(help="The student register (rejestr studentów).", no_args_is_help=True)


def _refused_json(file: Path, exc: MlegError) -> dict[str, Any]:
    """What --json prints for a refused file: every problem as {line, message}."""
    problems: list[dict[str, Any]]
    extra: dict[str, Any] = {}
    if isinstance(exc, MassRemovalError):
        problems = [{"line": None, "message": exc.reason}]
        extra = {"would_remove": exc.would_remove, "active": exc.active}
    elif isinstance(exc, RegisterImportError):
        problems = [{"line": line or None, "message": message} for line, message in exc.problems]
    else:  # the database refused the writes (RegisterWriteError): no line to name
        problems = [{"line": None, "message": str(exc)}]
    return {"file": str(file), "ok": False, "refused": True, "changed": False, "problems": problems, **extra}


def _print_report(report: ImportReport, *, dry_run: bool, sync: bool) -> None:
    prefix = "dry run, nothing changed: " if dry_run else ""
    typer.echo(
        f"{prefix}{report.total} rows: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.removed} marked removed"
    )
    if dry_run and sync and report.albums_removed:
        typer.echo(f"albums that would be marked removed ({len(report.albums_removed)}):")
        typer.echo(textwrap.fill(" ".join(report.albums_removed), width=100,
                                 initial_indent="  ", subsequent_indent="  "))
    if report.kept_absent:
        typer.echo(f"{report.kept_absent} graduated or suspended student(s) missing from the file kept as they are")
    if report.pesel_moved:
        typer.echo(f"{report.pesel_moved} PESEL(s) moved from an album missing from the file to a new one; "
                   f"{report.credentials_moved} live credential(s) moved with them")
    if report.email_changed:
        typer.echo(f"{report.email_changed} e-mail address(es) changed: {report.activations_revoked} pending "
                   f"activation(s) revoked, {report.mail_cancelled} unsent e-mail(s) to old addresses cancelled")


@app.command("import")
@friendly_errors
def import_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="CSV file, UTF-8, comma-separated.")],
    sync: Annotated[bool, typer.Option("--sync", help=(
        "Also mark active students missing from the file as removed (skreśleni) as of today "
        "(graduated and suspended ones stay as they are); a PESEL of a missing album moves to "
        "the album in the file that has it."))] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help=(
        "Validate and report (with --sync: the albums that would be marked removed); change nothing."))] = False,
    allow_mass_removal: Annotated[bool, typer.Option("--allow-mass-removal", help=(
        "With --sync: go ahead although the file has no rows or would mark more than "
        "MLEG_REGISTRY__MAX_REMOVED_SHARE of the active students removed."))] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report (or the problems) as JSON.")] = False,
) -> None:
    """Import or sync the register. A file with any bad line is refused whole.

    Columns (header line required, in this order):
    album,pesel,first_name,last_name,email,study_level,status,els_number,els_valid_until,removed_on
    """
    ctx = build_context()
    try:
        rows = parse_register(
            file.read_bytes(), box=ctx.box, email_domains=ctx.settings.university.email_domains
        )
        with unit_of_work(ctx.engine) as session:
            # A dry run goes through (nothing is kept) so it can list what a sync would remove.
            report = import_register(
                session, rows, now=ctx.clock.now(), today=ctx.clock.today(), sync=sync,
                actor="cli", source=str(file), max_removed_share=ctx.settings.registry.max_removed_share,
                allow_mass_removal=allow_mass_removal or dry_run, ctx=ctx, dry_run=dry_run,
            )
            if dry_run:
                session.rollback()
    except MlegError as exc:
        if not as_json:
            raise
        emit_json(_refused_json(file, exc))
        typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(2) from exc
    # Without --allow-mass-removal the real run would stop here: the dry run says so and fails too.
    refused = report.mass_removal if dry_run and not allow_mass_removal else None
    summary = {
        "file": str(file), "rows": report.total, "added": report.added, "updated": report.updated,
        "unchanged": report.unchanged, "removed": report.removed, "dry_run": dry_run,
        "albums_removed": report.albums_removed, "mass_removal": report.mass_removal, "ok": refused is None,
        "kept_absent": report.kept_absent, "pesel_moved": report.pesel_moved,
        "credentials_moved": report.credentials_moved, "email_changed": report.email_changed,
        "activations_revoked": report.activations_revoked, "mail_cancelled": report.mail_cancelled,
    }
    if as_json:
        emit_json(summary)
    else:
        _print_report(report, dry_run=dry_run, sync=sync)
    if refused:
        typer.echo(f"error: the real sync would be refused: {refused} "
                   "(pass --allow-mass-removal if the file is right)", err=True)
        raise typer.Exit(2)


@app.command("header")
def header_command() -> None:
    """Print the CSV header the import expects."""
    typer.echo(",".join(HEADER))
