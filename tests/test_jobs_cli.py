"""`mleg jobs run-once --now ... --json` as an operator runs it: counts per job, safe to repeat."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.app.clock import FixedClock
from core.storage.db import make_engine
from tests.cli_helpers import cli_environment, run
from tests.factories import build_ctx, issue, make_settings
from tests.support.lifecycle import activate

pytestmark = pytest.mark.process  # every test here runs `mleg` or serve as a process


@pytest.fixture
def cli_env(tmp_path: Path, db_url: str) -> dict[str, str]:
    return cli_environment(tmp_path, db_url)


def _one_active_credential(tmp_path: Path, db_url: str) -> None:
    """A credential issued on 5 November 2026 and activated: what the jobs below act on."""
    engine = make_engine(db_url)
    ctx = build_ctx(make_settings(tmp_path, database_url=db_url), engine,
                    FixedClock(datetime(2026, 11, 5, 9, tzinfo=UTC)))
    _, cid = issue(ctx)
    activate(ctx, cid)
    engine.dispose()


def test_run_once_at_an_instant(cli_env: dict[str, str], tmp_path: Path, db_url: str) -> None:
    _one_active_credential(tmp_path, db_url)

    first = run(["jobs", "run-once", "--now", "2027-03-20T10:00:00+01:00", "--json"], cli_env)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["ok"] and data["now"] == "2027-03-20T09:00:00+00:00"
    assert data["jobs"]["reminders"]["validity"] == 1
    assert data["jobs"]["sweep"]["validity_expired"] == 0

    again = json.loads(run(["jobs", "run-once", "--now", "2027-03-20T10:00:00", "--json"], cli_env).stdout)
    assert again["now"] == "2027-03-20T09:00:00+00:00"  # naive = Warsaw time
    assert again["jobs"]["reminders"]["validity"] == 0

    later = run(["jobs", "run-once", "--now", "2027-04-01T00:30:00"], cli_env)
    assert later.returncode == 0, later.stderr
    assert "validity_expired=1" in later.stdout

    ledger = json.loads(run(["jobs", "runs", "--name", "sweep", "--json"], cli_env).stdout)
    assert [r["detail"]["validity_expired"] for r in ledger] == [1, 0, 0]

    bad = run(["jobs", "run-once", "--now", "yesterday"], cli_env)
    assert bad.returncode == 2 and "ISO-8601" in bad.stderr


def test_runs_and_run_once_print_warsaw_time_with_the_offset(
    cli_env: dict[str, str], tmp_path: Path, db_url: str
) -> None:
    _one_active_credential(tmp_path, db_url)

    # 01:30 on the day of the 3-day reminder: the night queues no reminder (it waits for 09:00).
    night = run(["jobs", "run-once", "--now", "2027-03-28T01:30"], cli_env)
    assert night.returncode == 0, night.stderr
    assert "jobs at 2027-03-28T01:30:00+01:00:" in night.stdout
    assert "validity=0" in night.stdout and "outside the sending hours" in night.stdout
    summer = run(["jobs", "run-once", "--now", "2027-03-28T09:00"], cli_env)
    assert "jobs at 2027-03-28T09:00:00+02:00:" in summer.stdout and "validity=1" in summer.stdout

    ledger = run(["jobs", "runs", "--name", "reminders"], cli_env)
    assert ledger.returncode == 0, ledger.stderr
    assert "Europe/Warsaw" in ledger.stdout
    assert "2027-03-28T09:00:00+02:00" in ledger.stdout and "2027-03-28T01:30:00+01:00" in ledger.stdout
