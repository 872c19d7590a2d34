"""Settings refused at load with one clear line: config file problems, malformed addresses and domains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.app.errors import ConfigurationError
from core.app.settings import PROJECT_ROOT, load_settings
from tests.factories import TEST_SECRET


@pytest.fixture
def production(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Production mode, an empty config file; returns the file so a test can write into it."""
    config = tmp_path / "mleg.toml"
    config.write_text("")
    monkeypatch.setenv("MLEG_CONFIG_FILE", str(config))
    monkeypatch.setenv("MLEG_SECRET_KEY", TEST_SECRET)
    return config


def test_malformed_toml_names_the_file_and_line(production: Path) -> None:
    production.write_text('mode = "production"\n[smtp\nport = 25\n')
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert str(production) in message and "not valid TOML" in message and "line 2" in message
    assert "\n" not in message


def test_missing_config_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "typo.toml"
    monkeypatch.setenv("MLEG_CONFIG_FILE", str(missing))
    monkeypatch.setenv("MLEG_SECRET_KEY", TEST_SECRET)
    with pytest.raises(ConfigurationError, match=f"MLEG_CONFIG_FILE {missing}: no such file"):
        load_settings()


def test_config_file_is_read(production: Path) -> None:
    production.write_text('policy = "els"\n[registry]\nmax_removed_share = 0.05\n')
    settings = load_settings()
    assert settings.policy == "els" and settings.registry.max_removed_share == 0.05


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MLEG_SMTP__SENDER", "not-an-email"),
        ("MLEG_SMTP__SENDER", "a@b"),
        ("MLEG_SMTP__SENDER", "a b@example.edu.pl"),
        ("MLEG_SMTP__REPLY_TO", "@example.edu.pl"),
        ("MLEG_UNIVERSITY__HELP_DESK_EMAIL", "help desk"),
        ("MLEG_UNIVERSITY__EMAIL_DOMAINS", "@@"),
        ("MLEG_UNIVERSITY__EMAIL_DOMAINS", ""),
        ("MLEG_UNIVERSITY__EMAIL_DOMAINS", "student uni.pl"),
        ("MLEG_UNIVERSITY__EMAIL_DOMAINS", "-bad.uni.pl"),
        ("MLEG_UNIVERSITY__MESSAGE_ID_DOMAIN", "x"),
        ("MLEG_REGISTRY__MAX_REMOVED_SHARE", "1.5"),
    ],
)
def test_malformed_mail_settings_are_refused(
    name: str, value: str, production: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name) as caught:
        load_settings()
    assert "\n" not in str(caught.value)


def test_good_mail_settings_are_accepted(production: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLEG_SMTP__SENDER", "mlegitymacja+noreply@uni.example.test")
    monkeypatch.setenv("MLEG_UNIVERSITY__EMAIL_DOMAINS", "@Student.Uni.pl, uni.pl")
    settings = load_settings()
    assert settings.university.email_domains == ["student.uni.pl", "uni.pl"]
    assert settings.smtp.sender == "mlegitymacja+noreply@uni.example.test"


@pytest.mark.parametrize("problem", ["missing", "malformed"])
@pytest.mark.process
def test_cli_says_it_in_one_line(problem: str, tmp_path: Path) -> None:
    config = tmp_path / "mleg.toml"
    if problem == "malformed":
        config.write_text("mode = \n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLEG_")}
    env.update(MLEG_CONFIG_FILE=str(config), MLEG_SECRET_KEY=TEST_SECRET, MLEG_VAR_DIR=str(tmp_path / "var"))
    result = subprocess.run([sys.executable, "-m", "core.cli", "status"], env=env, capture_output=True,
                            text=True, timeout=120, cwd=PROJECT_ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and str(config) in result.stderr
    assert result.stderr.startswith("error: ")
