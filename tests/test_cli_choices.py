"""CLI options accept only what they document: thread statuses, limits, staff revoke reasons."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlmodel import select

from tests.cli_helpers import cli_environment, run
from tests.factories import TEST_SECRET

pytestmark = pytest.mark.process  # every test here runs `mleg` or serve as a process


@pytest.fixture
def cli_env(tmp_path: Path, sqlite_url: str) -> dict[str, str]:
    return cli_environment(tmp_path, sqlite_url, COLUMNS="200")


def test_thread_status_is_a_choice(cli_env: dict[str, str]) -> None:
    result = run(["threads", "list", "--status", "bogus"], cli_env)
    assert result.returncode == 2 and "bogus" in result.stderr
    for status in ("open", "all", "escalated", "claimed", "answered", "closed"):
        assert run(["threads", "list", "--status", status], cli_env).returncode == 0


@pytest.mark.parametrize("command", [["credentials", "list"], ["threads", "list"], ["jobs", "runs"]])
def test_negative_limit_is_refused(command: list[str], cli_env: dict[str, str]) -> None:
    result = run([*command, "--limit", "-5"], cli_env)
    assert result.returncode == 2 and "--limit" in result.stderr


def test_revoke_reasons_in_help_are_the_accepted_ones(cli_env: dict[str, str]) -> None:
    staff = ["lost_phone", "new_phone", "student_request", "graduation", "removal", "staff"]
    help_text = re.sub(r"[\s│]+", "", run(["credentials", "revoke", "--help"], cli_env).stdout)
    assert "<" + "|".join(staff) + ">" in help_text
    for reason in ("validity_ended", "activation_window_passed", "removal_grace_ended", "not_eligible"):
        assert reason not in help_text
        result = run(["credentials", "revoke", "1", "--reason", reason, "--yes"], cli_env)
        assert result.returncode == 2 and reason in result.stderr


def test_revoking_twice_says_already_revoked(cli_env: dict[str, str], tmp_path: Path) -> None:
    from core.app.context import AppContext
    from core.app.settings import load_settings
    from core.credentials.service import request_credential
    from core.storage.db import make_engine, unit_of_work
    from core.storage.models import Student
    from tests.factories import add_student

    url = cli_env["MLEG_DATABASE_URL"]
    settings = load_settings(mode="production", secret_key=TEST_SECRET, database_url=url, var_dir=tmp_path / "var")
    ctx = AppContext.build(settings, migrate=False, engine=make_engine(url))
    with unit_of_work(ctx.engine) as session:
        add_student(session, ctx.box)
        student = session.exec(select(Student)).one()
        credential = request_credential(ctx, session, student, channel="console", actor="test")
    ctx.engine.dispose()

    first = run(["credentials", "revoke", str(credential.id), "--reason", "lost_phone", "--yes"], cli_env)
    assert first.returncode == 0, first.stderr
    second = run(["credentials", "revoke", str(credential.id), "--reason", "lost_phone", "--yes"], cli_env)
    assert second.returncode == 2
    assert "already revoked" in second.stderr and "is not allowed" not in second.stderr
