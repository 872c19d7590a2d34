"""`mleg jobs`: run the lifecycle jobs once (at an instant of your choosing) and read their ledger."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from sqlmodel import Session, col, select

from core.app.clock import WARSAW, ensure_utc
from core.cli.common import build_context, emit_json, friendly_errors, print_table
from core.storage.models import JobRun

app = typer.Typer(help="Lifecycle jobs: expiries, reminders, revocations, register sync.", no_args_is_help=True)


def parse_instant(value: str) -> datetime:
    """ISO-8601; without an offset the time is Warsaw time (what an operator there means)."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO-8601 date/time (e.g. 2027-03-20T08:00:00+01:00)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=WARSAW)
    return moment


def local_time(moment: datetime) -> str:
    """Europe/Warsaw with its offset, to the second: how every `mleg jobs` table shows an instant."""
    return ensure_utc(moment).astimezone(WARSAW).isoformat(timespec="seconds")


@app.command("run-once")
@friendly_errors
def run_once_command(
    now: Annotated[str | None, typer.Option(
        "--now", help="Act as if it were this instant (ISO-8601; no offset = Europe/Warsaw).")] = None,
    drain: Annotated[bool, typer.Option(
        "--drain", help="Also hand the queued messages to the channel senders.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Run every lifecycle job due at NOW (default: the real time). Safe to repeat: nothing twice."""
    from core.jobs.drain import drain_all
    from core.jobs.runner import run_due

    ctx = build_context(now=parse_instant(now) if now else None)
    results: dict[str, Any] = dict(run_due(ctx))
    if drain:
        results["outbox"] = {"ok": True, **asyncio.run(drain_all(ctx))}
    failed = [name for name, result in results.items() if not result.get("ok", True)]
    if as_json:
        emit_json({"now": ctx.clock.now(), "jobs": results, "ok": not failed})
    else:
        typer.echo(f"jobs at {local_time(ctx.clock.now())}:")
        for name, result in results.items():
            counts = ", ".join(f"{k}={v}" for k, v in result.items() if k != "ok")
            typer.echo(f"  {name:14} {'ok' if result.get('ok', True) else 'FAILED'}  {counts}")
    if failed:
        raise typer.Exit(1)


@app.command("runs")
@friendly_errors
def runs_command(
    name: Annotated[str | None, typer.Option(help="Only this job.")] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The job ledger: recent runs and what they did."""
    ctx = build_context()
    with Session(ctx.engine) as session:
        query = select(JobRun).order_by(sa.desc(col(JobRun.id))).limit(limit)
        if name:
            query = query.where(JobRun.name == name)
        runs = session.exec(query).all()
    items = [
        {"id": r.id, "name": r.name, "started_at": r.started_at, "finished_at": r.finished_at,
         "ok": r.ok, "detail": json.loads(r.detail) if r.detail else {}}
        for r in runs
    ]
    if as_json:
        emit_json(items)
        return
    print_table(
        ["id", "job", "started (Europe/Warsaw)", "ok", "detail"],
        [(i["id"], i["name"], local_time(i["started_at"]), "yes" if i["ok"] else "NO",
          json.dumps(i["detail"], sort_keys=True)) for i in items],
    )
