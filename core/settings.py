"""Settings: `config/mleg.toml`, then `MLEG_*` environment variables (`__` nests).

Built once in the entry point and passed down; nothing here runs at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core.errors import ConfigurationError

__all__ = ["PROJECT_ROOT", "Settings", "load_settings"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_SECRET = "demo-only-secret-do-not-use-in-production-0000"
_PLACEHOLDERS = {"", "changeme", "change-me", "secret", "xxx", "todo", DEMO_SECRET}

Security = Literal["none", "starttls", "tls"]


def _split_csv(value: Any) -> Any:
    """Lets `MLEG_UNIVERSITY__EMAIL_DOMAINS=a.edu.pl,b.edu.pl` work besides JSON lists."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class TelegramSettings(BaseModel):
    token: SecretStr | None = None
    api_base_url: str = "https://api.telegram.org/bot"
    staff_chat_id: int | None = None
    staff_user_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = 8443
    messages_per_second: float = 30.0
    messages_per_chat_per_second: float = 1.0

    _split = field_validator("staff_user_ids", mode="before")(_split_csv)


class SmtpSettings(BaseModel):
    host: str | None = None
    port: int = 587
    username: str | None = None
    password: SecretStr | None = None
    security: Security = "starttls"
    sender: str = "mlegitymacja@example.edu.pl"
    reply_to: str | None = None
    timeout_seconds: float = 30.0
    ca_file: str | None = None


class ImapSettings(BaseModel):
    host: str | None = None
    port: int = 993
    username: str | None = None
    password: SecretStr | None = None
    security: Security = "tls"
    mailbox: str = "INBOX"
    processed_mailbox: str | None = None
    poll_interval_seconds: float = 60.0
    idle_timeout_seconds: float = 600.0
    max_message_bytes: int = 25 * 1024 * 1024
    auto_replies_per_sender_per_day: int = 3
    ca_file: str | None = None


class UniversitySettings(BaseModel):
    name: str = "Uniwersytet Demonstracyjny"
    email_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["student.example.edu.pl"]
    )
    help_desk_email: str = "mlegitymacja@example.edu.pl"
    message_id_domain: str = "example.edu.pl"

    _split = field_validator("email_domains", mode="before")(_split_csv)

    @field_validator("email_domains")
    @classmethod
    def _lower(cls, domains: list[str]) -> list[str]:
        return [d.lower().lstrip("@") for d in domains]


class LimitsSettings(BaseModel):
    guesses_per_hour: int = 5
    guess_window_minutes: int = 60
    chat_code_ttl_minutes: int = 15


class CredentialSettings(BaseModel):
    activation_window_days: int = 30
    renewal_window_days: int = 30
    revoke_on_graduation: bool = True


class ReminderSettings(BaseModel):
    validity_days_before: list[int] = Field(default_factory=lambda: [14, 3])
    activation_days_before: list[int] = Field(default_factory=lambda: [7, 1])
    semester_start: bool = True
    semester_start_days_after: int = 1


class JobsSettings(BaseModel):
    sweep_interval_minutes: int = 15
    reminders_interval_minutes: int = 60
    outbox_interval_seconds: float = 5.0
    register_sync_path: str | None = None
    register_sync_cron: str = "0 3 * * *"
    retention_days: int = 365
    batch_size: int = 1000


class Settings(BaseSettings):
    """Everything an operator configures. See README "Configuration"."""

    model_config = SettingsConfigDict(
        env_prefix="MLEG_",
        env_nested_delimiter="__",
        extra="ignore",
        toml_file=None,
    )

    mode: Literal["demo", "production"] = "production"
    database_url: str | None = None
    secret_key: SecretStr | None = None
    policy: Literal["els", "standalone"] = "standalone"
    default_language: Literal["pl", "en"] = "pl"
    var_dir: Path = PROJECT_ROOT / "var"
    config_dir: Path = PROJECT_ROOT / "config"
    log_level: str = "INFO"

    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    imap: ImapSettings = Field(default_factory=ImapSettings)
    university: UniversitySettings = Field(default_factory=UniversitySettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    credential: CredentialSettings = Field(default_factory=CredentialSettings)
    reminders: ReminderSettings = Field(default_factory=ReminderSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("MLEG_CONFIG_FILE", PROJECT_ROOT / "config" / "mleg.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @model_validator(mode="after")
    def _refuse_unsafe_secret(self) -> Settings:
        secret = self.secret_key.get_secret_value() if self.secret_key else ""
        if self.mode == "demo":
            if not secret:
                self.secret_key = SecretStr(DEMO_SECRET)
            return self
        if secret.strip().lower() in _PLACEHOLDERS or len(secret) < 32:
            raise ConfigurationError(
                "MLEG_SECRET_KEY is missing or a placeholder: set it to a random value of at "
                "least 32 characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
                " or run with MLEG_MODE=demo for a demonstration."
            )
        if self.telegram.webhook_url and not self.telegram.webhook_secret:
            raise ConfigurationError(
                "MLEG_TELEGRAM__WEBHOOK_URL is set but MLEG_TELEGRAM__WEBHOOK_SECRET is not: "
                "webhook mode needs a secret token."
            )
        return self

    @property
    def secret(self) -> bytes:
        assert self.secret_key is not None
        return self.secret_key.get_secret_value().encode()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.var_dir / 'mleg.db'}"

    @property
    def maildir_path(self) -> Path:
        return self.var_dir / "maildir"


def load_settings(**overrides: Any) -> Settings:
    """Build settings once; a validation problem becomes a ConfigurationError that names the setting."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"MLEG_{'__'.join(str(p).upper() for p in err['loc'])}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from exc
