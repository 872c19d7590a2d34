"""A wrong MLEG_DATABASE_URL is one `error:` line and exit code 2 for every command, password masked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.app.settings import PROJECT_ROOT
from tests.factories import TEST_SECRET
from tests.servers.ports import free_port  # nothing listens on it once returned
from tests.support.databases import POSTGRES_URL, in_ci

PASSWORD = "s3cret-Passw0rd"
COMMANDS = [["status"], ["db", "upgrade"], ["credentials", "list"], ["threads", "list"], ["jobs", "run-once"]]


def run(args: list[str], database_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLEG_")}
    env.update(MLEG_MODE="production", MLEG_SECRET_KEY=TEST_SECRET, MLEG_VAR_DIR=str(tmp_path / "var"),
               MLEG_DATABASE_URL=database_url)
    return subprocess.run([sys.executable, "-m", "core.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=PROJECT_ROOT)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and PASSWORD not in result.stdout + result.stderr
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c))
@pytest.mark.process
def test_not_a_url(command: list[str], tmp_path: Path) -> None:
    assert "MLEG_DATABASE_URL is not a database URL" in _one_error_line(run(command, "notaurl", tmp_path))


@pytest.mark.process
def test_driver_not_installed(tmp_path: Path) -> None:
    line = _one_error_line(run(["status"], f"mysql://mleg:{PASSWORD}@127.0.0.1/mleg", tmp_path))
    assert "driver" in line and "not installed" in line and "mleg:***@" in line


@pytest.mark.process
def test_unknown_kind_of_database(tmp_path: Path) -> None:
    assert "unknown kind of database" in _one_error_line(run(["status"], "nosuchdb://x/y", tmp_path))


@pytest.mark.parametrize("command", [["status"], ["db", "upgrade"]], ids=lambda c: "-".join(c))
@pytest.mark.process
def test_postgres_not_listening(command: list[str], tmp_path: Path) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/mleg"
    line = _one_error_line(run(command, url, tmp_path))
    assert "cannot connect to the database" in line and "postgres:***@127.0.0.1" in line


@pytest.mark.postgres
@pytest.mark.process
def test_postgres_refuses_the_role(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from core.storage.db import make_engine

    engine = make_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure means: no server to test against here
        reason = f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}"
        if in_ci():  # as tests/conftest.py's postgres_database: CI must test against a real server
            pytest.fail(reason + " (CI=true: storage must be tested on PostgreSQL)")
        pytest.skip(reason)
    finally:
        engine.dispose()
    server = POSTGRES_URL.split("@", 1)[1]
    line = _one_error_line(run(["status"], f"postgresql://no_such_role_mleg:{PASSWORD}@{server}", tmp_path))
    assert "cannot connect to the database" in line and "no_such_role_mleg" in line
