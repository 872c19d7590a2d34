"""`mleg serve` refusing to start says why in one line (exit 2), whatever it is that refuses; production
refuses to start without SMTP (no Maildir fallback), a demo starts without it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.app.errors import ConfigurationError
from core.app.settings import PROJECT_ROOT, load_settings
from tests.cli_helpers import cli_environment, run
from tests.factories import make_settings
from tests.servers.ports import free_port  # nothing listens on it once returned

TOKEN = "123456789:AAsecretTOKENvalue-for-tests"


@pytest.mark.process
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


# --- production does not fall back to the Maildir -------------------------------------------

@pytest.mark.process
def test_production_serve_without_smtp_refuses_to_start(tmp_path: Path, sqlite_url: str) -> None:
    env = cli_environment(tmp_path, sqlite_url)
    result = subprocess.run([sys.executable, "-m", "core.cli", "serve", "--no-jobs"], env=env,
                            capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "MLEG_SMTP__HOST" in lines[0], lines
    assert not (tmp_path / "var" / "maildir").exists()


def test_production_with_smtp_and_demo_without_are_accepted(tmp_path: Path, sqlite_url: str) -> None:
    from core.cli.serve import check_email_delivery

    check_email_delivery(make_settings(tmp_path, database_url=sqlite_url, smtp={"host": "smtp.example.edu.pl"}))
    check_email_delivery(make_settings(tmp_path, database_url=sqlite_url, mode="demo"))
    with pytest.raises(ConfigurationError, match="MLEG_SMTP__HOST"):
        check_email_delivery(make_settings(tmp_path, database_url=sqlite_url))


@pytest.mark.process
def test_demo_serve_without_smtp_still_starts(tmp_path: Path, sqlite_url: str) -> None:
    env = {**cli_environment(tmp_path, sqlite_url), "MLEG_MODE": "demo"}
    process = subprocess.Popen([sys.executable, "-m", "core.cli", "serve", "--no-jobs"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 60
        assert process.stderr is not None
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "serving:" in line:
                break
        assert any("serving:" in line for line in seen), seen
        assert process.poll() is None, "still running"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0, "a SIGTERM right after start stops it cleanly"
