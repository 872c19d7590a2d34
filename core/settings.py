"""Settings: `config/mleg.toml`, then `MLEG_*` environment variables (`__` nests).

Built once in the entry point and passed down; nothing here runs at import time.
"""

from __future__ import annotations

import os
import re
import tomllib
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

__all__ = ["DEFAULT_MAX_REMOVED_SHARE", "PROJECT_ROOT", "Settings", "load_settings"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_SECRET = "demo-only-secret-do-not-use-in-production-0000"
DEFAULT_MAX_REMOVED_SHARE = 0.2
_PLACEHOLDERS = {"", "changeme", "change-me", "secret", "xxx", "todo", DEMO_SECRET}

Security = Literal["none", "starttls", "tls"]

# A host name of two or more labels (RFC 1035 letters, digits, hyphens; no label starts or
# ends with a hyphen). Mail to a single-label name is never delivered off the box.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")
_LOCAL_PART = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
# Telegram takes 1-256 characters of these as a webhook's secret token; fewer than 32 can be
# guessed by whoever finds the URL, and a guessed one lets them post updates as any student.
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{32,256}$")


def _check_domain(value: str) -> str:
    domain = value.strip().lower()
    if not _DOMAIN.match(domain):
        raise ValueError(f"{value!r} is not a domain name (e.g. student.example.edu.pl)")
    return domain


def _check_address(value: str) -> str:
    """A bare address `local@domain.tld`, the form an SMTP envelope and From header need."""
    local, at, domain = value.strip().rpartition("@")
    if not at or not local or not _LOCAL_PART.match(local.lower()) or not _DOMAIN.match(domain.lower()):
        raise ValueError(f"{value!r} is not an e-mail address (e.g. mlegitymacja@example.edu.pl)")
    return value.strip()


def _check_optional_address(value: str | None) -> str | None:
    return None if value is None else _check_address(value)


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

    @field_validator("webhook_secret")
    @classmethod
    def _strong_webhook_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        # Never the value itself in the message: it is the secret.
        if secret is not None and not _WEBHOOK_SECRET.match(secret.get_secret_value()):
            raise ValueError(
                "the webhook secret must be 32 to 256 characters of A-Z, a-z, 0-9, _ and - "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        return secret


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

    _sender = field_validator("sender")(_check_address)
    _reply_to = field_validator("reply_to")(_check_optional_address)


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

    _help_desk = field_validator("help_desk_email")(_check_address)
    _message_id_domain = field_validator("message_id_domain")(_check_domain)

    @field_validator("email_domains")
    @classmethod
    def _valid_domains(cls, domains: list[str]) -> list[str]:
        # Register addresses must be in one of these: an empty list would refuse every
        # student, a malformed entry matches nobody.
        names = [d.strip().lstrip("@") for d in domains]
        if "" in names:
            raise ValueError("an empty domain name in the list (comma-separated, e.g. student.example.edu.pl)")
        cleaned = [_check_domain(name) for name in names]
        if not cleaned:
            raise ValueError("at least one domain is needed (e.g. student.example.edu.pl)")
        return cleaned


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
    # Daytime only (Europe/Warsaw, from <= hour < until): a chat reminder must not ring at night.
    # Outside these hours the reminders job queues nothing; its next run inside them does.
    send_from_hour: int = Field(default=9, ge=0, le=23)
    send_until_hour: int = Field(default=20, ge=1, le=24)

    @model_validator(mode="after")
    def _daytime(self) -> ReminderSettings:
        if self.send_from_hour >= self.send_until_hour:
            raise ValueError(
                f"send_from_hour ({self.send_from_hour}) must be before send_until_hour ({self.send_until_hour})"
            )
        return self


class RegistrySettings(BaseModel):
    # A sync that would mark more than this share of the active students removed is refused
    # (removal revokes credentials): a cut-off export must not revoke the university.
    # `mleg registry import --sync --allow-mass-removal` overrides it; the scheduled sync never does.
    max_removed_share: float = Field(default=DEFAULT_MAX_REMOVED_SHARE, ge=0.0, le=1.0)


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
    registry: RegistrySettings = Field(default_factory=RegistrySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _config_file()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @model_validator(mode="after")
    def _refuse_unsafe_secret(self) -> Settings:
        # In every mode: without it anyone who finds the URL can post updates as any student.
        if self.telegram.webhook_url and not self.telegram.webhook_secret:
            raise ConfigurationError(
                "MLEG_TELEGRAM__WEBHOOK_URL is set but MLEG_TELEGRAM__WEBHOOK_SECRET is not: "
                "webhook mode needs a secret token."
            )
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


def _config_file() -> Path | None:
    """The TOML file to read, checked readable and well-formed; None when there is none to read.

    The shipped `config/mleg.toml` may be absent (settings from the environment only), but a
    file named in MLEG_CONFIG_FILE must exist: silently running without it would start the
    service on defaults the operator did not choose.
    """
    named = os.environ.get("MLEG_CONFIG_FILE", "").strip()
    path = Path(named) if named else PROJECT_ROOT / "config" / "mleg.toml"
    if not named and not path.is_file():
        return None
    if not path.is_file():
        raise ConfigurationError(f"MLEG_CONFIG_FILE {path}: no such file")
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"config file {path}: cannot read it ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"config file {path}: not UTF-8 (byte offset {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message names line and column only, never the offending text.
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from exc
    return path


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
