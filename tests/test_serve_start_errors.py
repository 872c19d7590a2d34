"""`mleg serve` refusing to start says why in one line (exit 2), whatever it is that refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigurationError
from core.settings import load_settings
from tests.cli_helpers import cli_environment, run
from tests.servers.ports import free_port  # nothing listens on it once returned

TOKEN = "123456789:AAsecretTOKENvalue-for-tests"


def test_unreachable_bot_api_is_one_error_line_without_the_token(tmp_path: Path, sqlite_url: str) -> None:
    env = {**cli_environment(tmp_path, sqlite_url, MLEG_TELEGRAM__TOKEN=TOKEN,
                             MLEG_TELEGRAM__API_BASE_URL=f"http://127.0.0.1:{free_port()}/bot"),
           "MLEG_MODE": "demo"}
    result = run(["serve", "--no-jobs"], env)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot reach the Telegram Bot API" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "AAsecretTOKENvalue" not in result.stderr + result.stdout


def test_webhook_without_a_secret_is_refused_in_demo_mode_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLEG_MODE", "demo")
    monkeypatch.setenv("MLEG_TELEGRAM__WEBHOOK_URL", "https://bot.example.edu.pl/telegram/hook")
    with pytest.raises(ConfigurationError, match="WEBHOOK_SECRET is not"):
        load_settings()
