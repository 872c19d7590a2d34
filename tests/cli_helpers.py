"""`mleg` as a subprocess, the way an operator runs it, with a clean MLEG_* environment, or in-process
through typer's runner (the `runner` fixture in tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from core.app.settings import PROJECT_ROOT
from core.cli import app
from tests.factories import TEST_SECRET


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=PROJECT_ROOT)


def cli_environment(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    """The parent's environment without any MLEG_* of its own, plus a production set-up on `database_url`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLEG_")}
    env.update(MLEG_MODE="production", MLEG_SECRET_KEY=TEST_SECRET, MLEG_VAR_DIR=str(tmp_path / "var"),
               MLEG_DATABASE_URL=database_url, **extra)
    return env


def invoke(runner: CliRunner, *args: str) -> str:
    """`mleg ARGS` in-process; its output, once it has exited 0."""
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output
