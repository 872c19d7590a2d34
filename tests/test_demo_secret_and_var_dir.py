"""A real installation never runs on the demo's public secret; the folders the product writes to
are made when they are new, and a mail that cannot be written is said, not hidden."""

from __future__ import annotations

import logging
import mailbox
from pathlib import Path

import pytest

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.app.errors import ConfigurationError
from core.app.settings import DEMO_SECRET, load_settings
from core.cli.chat import ConsoleChat
from core.storage.db import make_engine
from tests.cli_helpers import cli_environment, run
from tests.factories import build_ctx, make_settings

DEMO_REGISTER = Path(__file__).resolve().parent.parent / "config" / "demo-register.csv"
REAL_CHANNELS = {
    "MLEG_TELEGRAM__TOKEN": "123456789:AAsecretTOKENvalue-for-tests",
    "MLEG_SMTP__HOST": "smtp.example.edu.pl",
    "MLEG_IMAP__HOST": "imap.example.edu.pl",
}


def _demo_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "mleg.toml"
    config.write_text('mode = "demo"\n', encoding="utf-8")
    monkeypatch.setenv("MLEG_CONFIG_FILE", str(config))


@pytest.mark.parametrize("name", sorted(REAL_CHANNELS))
def test_a_real_channel_on_the_demo_secret_is_refused(name: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _demo_env(monkeypatch, tmp_path)
    monkeypatch.setenv(name, REAL_CHANNELS[name])
    with pytest.raises(ConfigurationError, match="MLEG_SECRET_KEY") as refused:
        load_settings()
    assert name in str(refused.value)


def test_the_demo_secret_given_by_hand_is_refused_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _demo_env(monkeypatch, tmp_path)
    monkeypatch.setenv("MLEG_SMTP__HOST", "smtp.example.edu.pl")
    monkeypatch.setenv("MLEG_SECRET_KEY", DEMO_SECRET)
    with pytest.raises(ConfigurationError, match="MLEG_SECRET_KEY"):
        load_settings()


def test_the_local_demo_and_a_demo_with_its_own_secret_still_start(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _demo_env(monkeypatch, tmp_path)
    assert load_settings().secret == DEMO_SECRET.encode()  # `make run`: console and Maildir
    for name, value in REAL_CHANNELS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLEG_SECRET_KEY", "a-real-secret-of-enough-length-0123456789")
    assert load_settings().secret != DEMO_SECRET.encode()


@pytest.mark.process
def test_the_cli_refuses_with_one_error_line(tmp_path: Path, sqlite_url: str) -> None:
    env = {**cli_environment(tmp_path, sqlite_url, **REAL_CHANNELS), "MLEG_MODE": "demo"}
    del env["MLEG_SECRET_KEY"]
    result = run(["status"], env)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:") and "MLEG_SECRET_KEY" in errors[0], result.stderr
    assert "AAsecretTOKENvalue" not in result.stderr


# --- MLEG_VAR_DIR pointing at a new folder ----------------------------------------------------------

@pytest.mark.process
def test_the_chat_in_a_new_var_dir_delivers_the_code_into_the_maildir(tmp_path: Path, sqlite_url: str) -> None:
    """The database elsewhere, the var dir not there yet: the chat's code mail still lands."""
    var = tmp_path / "new" / "place" / "var"
    env = {**cli_environment(tmp_path, sqlite_url), "MLEG_VAR_DIR": str(var)}
    assert run(["registry", "import", str(DEMO_REGISTER)], env).returncode == 0
    result = subprocess_chat(env, "2\n1\n98042090501\n100001\n")
    assert "delivered" in result.stdout and "NOT delivered" not in result.stdout, result.stdout[-2000:]
    messages = list(mailbox.Maildir(var / "maildir", create=False))
    assert len(messages) == 1 and messages[0]["To"] == "oliwia.wozniak.100001@student.example.edu.pl"


def subprocess_chat(env: dict[str, str], lines: str):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from core.app.settings import PROJECT_ROOT

    return subprocess.run([sys.executable, "-m", "core.cli", "chat", "--account", "newcomer"], env=env,
                          input=lines, capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)


@pytest.mark.process
def test_a_var_dir_that_cannot_be_made_is_one_error_line(tmp_path: Path, sqlite_url: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    env = {**cli_environment(tmp_path, sqlite_url), "MLEG_VAR_DIR": str(blocker / "var")}
    result = run(["status"], env)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error:") and "cannot create the data folder" in line and "MLEG_VAR_DIR" in line


def test_a_mail_that_cannot_be_written_is_said_in_the_chat_and_the_log(
    tmp_path: Path, sqlite_url: str, clock: FixedClock, caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    ctx: AppContext = build_ctx(make_settings(tmp_path, database_url=sqlite_url, var_dir=blocker / "var"),
                                make_engine(sqlite_url), clock)
    from core.storage.db import unit_of_work
    from tests.factories import add_student

    with unit_of_work(ctx.engine) as session:
        student, pesel = add_student(session, ctx.box)
        album = student.album
    lines: list[str] = []
    chat = ConsoleChat(ctx, "someone", write=lines.append)
    with caplog.at_level(logging.WARNING):
        for line in ("/start", "2", "1", pesel, album):
            chat.turn(line)
    said = "\n".join(lines)
    assert "one-time code" in said
    assert "NOT delivered" in said and "Maildir" in said
    # The outbox logs every failed attempt once, with the sender's error (core.messaging.delivery_failures).
    assert any(record.levelno == logging.WARNING and "delivery failed" in record.getMessage()
               and "Maildir" in record.getMessage() for record in caplog.records)
    ctx.engine.dispose()
