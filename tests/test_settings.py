"""Settings: TOML file, MLEG_* environment overrides, and refusal of unsafe secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.app.errors import ConfigurationError
from core.app.settings import load_settings


def _empty_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty config file: the environment alone decides (a missing MLEG_CONFIG_FILE is an error)."""
    config = tmp_path / "empty.toml"
    config.write_text("")
    monkeypatch.setenv("MLEG_CONFIG_FILE", str(config))


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "mleg.toml"
    config.write_text('mode = "demo"\npolicy = "els"\n[smtp]\nhost = "smtp.a"\nport = 25\n')
    monkeypatch.setenv("MLEG_CONFIG_FILE", str(config))
    monkeypatch.setenv("MLEG_SMTP__PORT", "2525")
    monkeypatch.setenv("MLEG_SMTP__SECURITY", "tls")
    monkeypatch.setenv("MLEG_TELEGRAM__STAFF_CHAT_ID", "-1001234")
    monkeypatch.setenv("MLEG_UNIVERSITY__EMAIL_DOMAINS", "student.uni.pl, Uni.pl")
    monkeypatch.setenv("MLEG_DATABASE_URL", "postgresql://u@h/db")
    # An SMTP host is a real channel: the demo's public secret is refused with it.
    monkeypatch.setenv("MLEG_SECRET_KEY", "a-secret-of-its-own-long-enough-0123456789")
    settings = load_settings()
    assert settings.policy == "els"
    assert (settings.smtp.host, settings.smtp.port, settings.smtp.security) == ("smtp.a", 2525, "tls")
    assert settings.telegram.staff_chat_id == -1001234
    assert settings.university.email_domains == ["student.uni.pl", "uni.pl"]
    assert settings.effective_database_url == "postgresql://u@h/db"


@pytest.mark.parametrize("secret", [None, "", "changeme", "short-secret"])
def test_production_refuses_missing_or_placeholder_secret(
    secret: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _empty_config(tmp_path, monkeypatch)
    if secret is not None:
        monkeypatch.setenv("MLEG_SECRET_KEY", secret)
    with pytest.raises(ConfigurationError, match="MLEG_SECRET_KEY"):
        load_settings()


def test_demo_mode_runs_without_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _empty_config(tmp_path, monkeypatch)
    monkeypatch.setenv("MLEG_MODE", "demo")
    assert load_settings().secret_key is not None


def test_bad_value_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _empty_config(tmp_path, monkeypatch)
    monkeypatch.setenv("MLEG_MODE", "demo")
    monkeypatch.setenv("MLEG_SMTP__SECURITY", "ssl")
    with pytest.raises(ConfigurationError, match="MLEG_SMTP__SECURITY"):
        load_settings()


def test_webhook_needs_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _empty_config(tmp_path, monkeypatch)
    monkeypatch.setenv("MLEG_SECRET_KEY", "x" * 40)
    monkeypatch.setenv("MLEG_TELEGRAM__WEBHOOK_URL", "https://bot.example.edu.pl/hook")
    with pytest.raises(ConfigurationError, match="WEBHOOK_SECRET"):
        load_settings()


def test_shipped_config_is_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.mode == "demo" and settings.smtp.host is None


@pytest.mark.parametrize("secret", ["a", "s3cret-token-for-tests", "x" * 31, "x" * 31 + "!", "x" * 257,
                                    "ą" * 40])
def test_weak_webhook_secret_is_refused(secret: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Telegram allows 1-256 of A-Za-z0-9_-; below 32 it can be guessed: one error line naming the setting."""
    _empty_config(tmp_path, monkeypatch)
    monkeypatch.setenv("MLEG_MODE", "demo")
    monkeypatch.setenv("MLEG_TELEGRAM__WEBHOOK_URL", "https://bot.example.edu.pl/hook")
    monkeypatch.setenv("MLEG_TELEGRAM__WEBHOOK_SECRET", secret)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    message = str(refused.value)
    assert "MLEG_TELEGRAM__WEBHOOK_SECRET" in message and "32" in message and "\n" not in message
    assert len(secret) < 8 or secret not in message  # the secret itself is never echoed


def test_strong_webhook_secret_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _empty_config(tmp_path, monkeypatch)
    monkeypatch.setenv("MLEG_MODE", "demo")
    monkeypatch.setenv("MLEG_TELEGRAM__WEBHOOK_URL", "https://bot.example.edu.pl/hook")
    monkeypatch.setenv("MLEG_TELEGRAM__WEBHOOK_SECRET", "Ab3_-" * 7)
    assert load_settings().telegram.webhook_secret is not None
