"""A ledger entry from the future (a `--now` test run, a clock set back) does not hold a job back now."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.app.context import AppContext
from core.app.settings import PROJECT_ROOT
from core.jobs import run_due
from tests.factories import TEST_SECRET
from tests.support.lifecycle import at


def test_future_retention_run_does_not_block_now(ctx: AppContext, caplog: pytest.LogCaptureFixture) -> None:
    at(ctx, "2027-04-01T08:00:00+02:00")
    assert "skipped" not in run_due(ctx)["retention"]

    at(ctx, "2026-10-05T09:00:00+02:00")
    with caplog.at_level(logging.WARNING, logger="core.jobs.runner"):
        now = run_due(ctx)
        again = run_due(ctx)
    assert "skipped" not in now["retention"], now["retention"]
    # Its own run now counts: not again every scheduler tick until 2027.
    assert again["retention"]["skipped"].startswith("next at 2026-10-06")
    warnings = [r for r in caplog.records if "later than now" in r.getMessage() and "retention" in r.getMessage()]
    assert len(warnings) == 1


def test_future_register_sync_does_not_block_now(ctx: AppContext, tmp_path: Path) -> None:
    from core.students.demo_register import generate_rows, rows_to_csv

    path = tmp_path / "students.csv"
    path.write_text(rows_to_csv(list(generate_rows(3))), encoding="utf-8")
    ctx.settings.jobs.register_sync_path = str(path)
    at(ctx, "2027-04-01T08:00:00+02:00")
    assert run_due(ctx)["register_sync"]["ok"]
    at(ctx, "2026-10-05T09:00:00+02:00")
    assert "skipped" not in run_due(ctx)["register_sync"]


@pytest.mark.process
def test_cli_run_once_after_a_future_now(tmp_path: Path, sqlite_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLEG_")}
    env.update(MLEG_MODE="production", MLEG_SECRET_KEY=TEST_SECRET, MLEG_VAR_DIR=str(tmp_path / "var"),
               MLEG_DATABASE_URL=sqlite_url)

    def run_once(*extra: str) -> dict[str, dict[str, object]]:
        result = subprocess.run([sys.executable, "-m", "core.cli", "jobs", "run-once", "--json", *extra],
                                env=env, capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
        assert result.returncode == 0, result.stderr
        jobs: dict[str, dict[str, object]] = json.loads(result.stdout)["jobs"]
        return jobs

    assert "skipped" not in run_once("--now", "2099-04-01T08:00")["retention"]
    assert "skipped" not in run_once()["retention"]
