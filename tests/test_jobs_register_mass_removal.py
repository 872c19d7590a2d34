"""The scheduled register sync refuses a cut-off export (empty, or removing too many) and never forces it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from core.app.context import AppContext
from core.jobs import run_due
from core.storage.models import JobRun, Student
from core.students.demo_register import generate_rows, rows_to_csv
from tests.support.lifecycle import at


def _statuses(ctx: AppContext) -> dict[str, str]:
    with Session(ctx.engine) as session:
        return {s.album: s.status for s in session.exec(select(Student)).all()}


def _failed_run(ctx: AppContext) -> dict[str, object]:
    with Session(ctx.engine) as session:
        run = session.exec(select(JobRun).where(JobRun.name == "register_sync", JobRun.ok == False)).one()  # noqa: E712
    detail: dict[str, object] = json.loads(run.detail)
    return detail


def _synced(ctx: AppContext, tmp_path: Path, students: int) -> tuple[list[Any], Path, dict[str, Any]]:
    """A first scheduled sync of `students` generated rows: (the rows, the export file, the result)."""
    rows = list(generate_rows(students))
    path = tmp_path / "students.csv"
    path.write_text(rows_to_csv(rows), encoding="utf-8")
    ctx.settings.jobs.register_sync_path = str(path)
    at(ctx, "2026-10-05T02:00:00+02:00")
    return rows, path, run_due(ctx)["register_sync"]


def test_header_only_export_is_refused_and_recorded(ctx: AppContext, tmp_path: Path) -> None:
    _, path, first = _synced(ctx, tmp_path, 20)
    assert first["added"] == 20
    before = _statuses(ctx)

    path.write_text(rows_to_csv([]), encoding="utf-8")  # the export was cut off after the header
    at(ctx, "2026-10-05T03:00:00+02:00")
    result = run_due(ctx)["register_sync"]
    assert result["ok"] is False and result["refused"] is True and result["error"] == "mass removal"
    assert "no student rows" in result["message"]
    assert _statuses(ctx) == before
    assert "no student rows" in str(_failed_run(ctx)["message"])


def test_export_missing_most_students_is_refused(ctx: AppContext, tmp_path: Path) -> None:
    rows, path, _ = _synced(ctx, tmp_path, 40)
    before = _statuses(ctx)

    path.write_text(rows_to_csv(rows[:10]), encoding="utf-8")
    at(ctx, "2026-10-05T03:00:00+02:00")
    result = run_due(ctx)["register_sync"]
    assert result["ok"] is False and "MLEG_REGISTRY__MAX_REMOVED_SHARE" in result["message"]
    assert _statuses(ctx) == before
    detail = _failed_run(ctx)
    assert detail["would_remove"] == result["would_remove"] and detail["active"] == result["active"]

    # An operator who raises the share lets the next night's run through.
    ctx.settings.registry.max_removed_share = 1.0
    at(ctx, "2026-10-06T03:00:00+02:00")
    # Only the active ones: a missing graduated or suspended student keeps that status.
    assert run_due(ctx)["register_sync"]["removed"] == sum(r["status"] == "active" for r in rows[10:])
