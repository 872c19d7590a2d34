"""The `mleg` CLI as an operator uses it: import, list, show, revoke, activate; no clear PESEL anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from core.app.settings import PROJECT_ROOT
from core.storage.db import MIGRATIONS_DIR
from core.students.demo_register import generate_rows, rows_to_csv
from tests.factories import TEST_SECRET

pytestmark = pytest.mark.process  # every test here runs `mleg` or serve as a process

MLEG = [sys.executable, "-m", "core.cli"]


def run(args: list[str], env: dict[str, str], input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MLEG, *args], env=env, capture_output=True, text=True, input=input, timeout=120,
        cwd=PROJECT_ROOT,
    )


@pytest.fixture
def cli_env(tmp_path: Path, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLEG_")}
    env.update(
        MLEG_MODE="production",
        MLEG_SECRET_KEY=TEST_SECRET,
        MLEG_VAR_DIR=str(tmp_path / "var"),
        MLEG_DATABASE_URL=db_url,
        MLEG_LOG_LEVEL="DEBUG",
    )
    return env


def test_import_list_show_revoke(cli_env: dict[str, str], tmp_path: Path) -> None:
    rows = list(generate_rows(40))
    csv_file = tmp_path / "register.csv"
    csv_file.write_text(rows_to_csv(rows), encoding="utf-8")
    result = run(["registry", "import", str(csv_file), "--json"], cli_env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 40

    # Issue a credential through the service, then operate on it through the CLI.
    from sqlmodel import select

    from core.app.context import AppContext
    from core.app.settings import load_settings
    from core.storage.db import make_engine, unit_of_work
    from core.storage.models import Student

    settings = load_settings(
        mode="production", secret_key=TEST_SECRET, database_url=cli_env["MLEG_DATABASE_URL"],
    )
    ctx = AppContext.build(settings, migrate=False, engine=make_engine(cli_env["MLEG_DATABASE_URL"]))
    from core.credentials.service import request_credential

    with unit_of_work(ctx.engine) as session:
        student = session.exec(select(Student).where(Student.album == rows[0]["album"])).one()
        credential = request_credential(ctx, session, student, channel="console", actor="test")
    ctx.engine.dispose()

    listed = run(["credentials", "list", "--json"], cli_env)
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)
    assert [i["state"] for i in items] == ["pending_activation"]
    assert items[0]["student"]["pesel"] == rows[0]["pesel"][:2] + "*******" + rows[0]["pesel"][-2:]

    shown = run(["credentials", "show", str(credential.id), "--json"], cli_env)
    assert json.loads(shown.stdout)["events"][-1]["to"] == "pending_activation"

    wrong = run(["credentials", "activate", str(credential.id), "--code", "AAAA-AAAA-AAAA"], cli_env)
    assert wrong.returncode == 2 and "wrong activation code" in wrong.stderr

    revoked = run(["credentials", "revoke", str(credential.id), "--reason", "lost_phone", "--yes",
                   "--by", "jkowalski"], cli_env)
    assert revoked.returncode == 0, revoked.stderr
    shown = json.loads(run(["credentials", "show", credential.public_id, "--json"], cli_env).stdout)
    assert shown["state"] == "revoked" and shown["events"][-1]["actor"] == "staff:jkowalski"

    missing = run(["credentials", "show", "999999"], cli_env)
    assert missing.returncode == 2 and "no credential" in missing.stderr

    # No clear PESEL in anything the CLI printed or logged.
    for output in (result, listed, shown and listed, revoked):
        for row in rows:
            if row["pesel"]:
                assert row["pesel"] not in output.stdout + output.stderr


def test_refused_file_lists_every_bad_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    rows = list(generate_rows(5))
    rows[1]["pesel"] = "12345678901"
    rows[3]["email"] = "x@gmail.com"
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(rows_to_csv(rows), encoding="utf-8")
    result = run(["registry", "import", str(csv_file)], cli_env)
    assert result.returncode == 2
    assert "line 3:" in result.stderr and "line 5:" in result.stderr
    assert "nothing was changed" in result.stderr
    listed = run(["credentials", "list", "--json"], cli_env)
    assert json.loads(listed.stdout) == []


def test_sqlite_file_has_no_clear_pesel_after_import(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLEG_")}
    env.update(MLEG_MODE="production", MLEG_SECRET_KEY=TEST_SECRET, MLEG_VAR_DIR=str(tmp_path / "var"),
               MLEG_LOG_LEVEL="DEBUG")
    rows = list(generate_rows(200))
    csv_file = tmp_path / "register.csv"
    csv_file.write_text(rows_to_csv(rows), encoding="utf-8")
    result = run(["registry", "import", str(csv_file)], env)
    assert result.returncode == 0, result.stderr
    status = run(["status"], env)
    assert "students        200" in status.stdout
    blob = b"".join(p.read_bytes() for p in (tmp_path / "var").glob("mleg.db*"))
    assert blob, "the database file exists"
    pesels = [r["pesel"] for r in rows if r["pesel"]]
    assert not [p for p in pesels if p.encode() in blob]
    assert not [p for p in pesels if p in result.stdout + result.stderr + status.stdout + status.stderr]


def test_help_explains_the_commands(cli_env: dict[str, str]) -> None:
    result = run(["--help"], cli_env)
    for verb in ("registry", "credentials", "db", "status"):
        assert verb in result.stdout
    assert "album,pesel,first_name" in run(["registry", "import", "--help"], cli_env).stdout


def test_db_upgrade(cli_env: dict[str, str]) -> None:
    result = run(["db", "upgrade"], cli_env)
    assert result.returncode == 0, result.stderr
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert f"revision {head}" in result.stdout


def test_production_without_secret_is_refused(cli_env: dict[str, str]) -> None:
    env = dict(cli_env)
    del env["MLEG_SECRET_KEY"]
    result = run(["status"], env)
    assert result.returncode == 2 and "MLEG_SECRET_KEY" in result.stderr
