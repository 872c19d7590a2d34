"""The scheduled register sync: a good file syncs (missing students marked removed), a bad one changes nothing."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.app.context import AppContext
from core.jobs import run_due
from core.storage.models import JobRun, Student
from core.students.demo_register import generate_rows, rows_to_csv
from tests.support.lifecycle import at


def test_good_file_syncs_and_bad_file_is_refused(
    ctx: AppContext, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = list(generate_rows(12))
    path = tmp_path / "students.csv"
    path.write_text(rows_to_csv(rows), encoding="utf-8")
    ctx.settings.jobs.register_sync_path = str(path)
    at(ctx, "2026-10-05T02:00:00+02:00")
    result = run_due(ctx)["register_sync"]
    assert result["ok"] and result["added"] == 12

    # Not due again until the cron (03:00 Warsaw) fires.
    at(ctx, "2026-10-05T02:30:00+02:00")
    assert "skipped" in run_due(ctx)["register_sync"]

    # Next night one student is missing from the file, and another line is broken.
    gone = next(r for r in rows if r["status"] == "active")
    kept = [dict(r) for r in rows if r is not gone]
    broken = [dict(r) for r in kept]
    bad = next(r for r in broken if r["pesel"])
    bad["pesel"] = bad["pesel"][:-1] + str((int(bad["pesel"][-1]) + 1) % 10)
    path.write_text(rows_to_csv(broken), encoding="utf-8")
    at(ctx, "2026-10-05T03:00:00+02:00")
    with caplog.at_level(logging.INFO):
        refused = run_due(ctx)["register_sync"]
    assert refused == {"ok": False, "file": "students.csv", "refused": True, "problems": 1}
    assert not re.search(r"\d{11}", caplog.text), "a PESEL-like number reached the log"
    with Session(ctx.engine) as session:
        assert {s.status for s in session.exec(select(Student)).all()} == {r["status"] for r in rows}
        run = session.exec(select(JobRun).where(JobRun.name == "register_sync", JobRun.ok == False)).one()  # noqa: E712
        assert json.loads(run.detail)["problems"] == 1

    # Fixed the next night: the missing student is marked removed.
    path.write_text(rows_to_csv(kept), encoding="utf-8")
    at(ctx, "2026-10-06T03:00:00+02:00")
    synced = run_due(ctx)["register_sync"]
    assert synced["ok"] and synced["removed"] == 1
    with Session(ctx.engine) as session:
        first = session.exec(select(Student).where(Student.album == gone["album"])).one()
    assert first.status == "removed" and str(first.removed_on) == "2026-10-06"


def test_not_configured_is_skipped(ctx: AppContext) -> None:
    assert run_due(ctx)["register_sync"] == {"ok": True, "skipped": "register_sync_path not set"}
