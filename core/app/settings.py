"""Settings: `MLEG_*` environment variables (`__` nests) over the settings file `mleg.toml`.

The settings file is MLEG_CONFIG_FILE when set, else `mleg.toml` in MLEG_CONFIG_DIR when it
has one, else the one shipped in the package (core/app/config_files.py).

Built once in the entry point and passed down; nothing here runs at import time.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core.app.config_files import default_var_dir, find, layers_of, shipped_dir
from core.app.errors import ConfigurationError
from core.app.settings_sections import (
    DEFAULT_MAX_REMOVED_SHARE,
    CredentialSettings,
    ImapSettings,
    JobsSettings,
    LimitsSettings,
    MailOAuthSettings,
    OperationsSettings,
    RegistrySettings,
    ReminderSettings,
    RetentionSettings,
    SmtpSettings,
    TelegramSettings,
    UniversitySettings,
    WebSettings,
)

__all__ = ["DEFAULT_MAX_REMOVED_SHARE", "PROJECT_ROOT", "Settings", "load_settings"]

# The source tree (tests and tools use it); the product reads nothing relative to it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_SECRET = "demo-only-secret-do-not-use-in-production-0000"
_PLACEHOLDERS = {"", "changeme", "change-me", "secret", "xxx", "todo", DEMO_SECRET}

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
    # Data: MLEG_VAR_DIR, else systemd's STATE_DIRECTORY, else the user's data dir (never the package).
    var_dir: Path = Field(default_factory=default_var_dir)
    # MLEG_CONFIG_DIR: the installation's texts and defaults, each file read instead of the shipped
    # one of the same name (see config_layers); unset, the shipped folder itself.
    config_dir: Path = Field(default_factory=shipped_dir)
    log_level: str = "INFO"

    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    imap: ImapSettings = Field(default_factory=ImapSettings)
    mail_oauth: MailOAuthSettings = Field(default_factory=MailOAuthSettings)
    university: UniversitySettings = Field(default_factory=UniversitySettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    credential: CredentialSettings = Field(default_factory=CredentialSettings)
    reminders: ReminderSettings = Field(default_factory=ReminderSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    operations: OperationsSettings = Field(default_factory=OperationsSettings)
    web: WebSettings = Field(default_factory=WebSettings)

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
            if secret and secret != DEMO_SECRET:
                return self
            # The demo secret is written in the repository: with it, anyone can compute the
            # stored PESEL hashes and open queued mail. Fine for `make run` (console, Maildir),
            # never for a service that real students reach.
            channels = self.real_channels()
            if channels:
                raise ConfigurationError(
                    f"MLEG_SECRET_KEY is not set, and {', '.join(channels)} "
                    f"{'is' if len(channels) == 1 else 'are'} configured: demo mode's public secret "
                    "is only for the local demo. Set MLEG_SECRET_KEY to a random value of at least "
                    "32 characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)."
                )
            self.secret_key = SecretStr(DEMO_SECRET)
            return self
        if secret.strip().lower() in _PLACEHOLDERS or len(secret) < 32:
            raise ConfigurationError(
                "MLEG_SECRET_KEY is missing or a placeholder: set it to a random value of at "
                "least 32 characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
                " or run with MLEG_MODE=demo for a demonstration."
            )
        return self

    @model_validator(mode="after")
    def _mail_oauth_complete(self) -> Settings:
        users = [name for name, conn in (("MLEG_IMAP", self.imap), ("MLEG_SMTP", self.smtp))
                 if conn.host and conn.auth == "xoauth2"]
        if not users:
            return self
        missing = self.mail_oauth.missing()
        if missing:
            raise ConfigurationError(
                f"{' and '.join(u + '__AUTH' for u in users)}=xoauth2 needs {', '.join(missing)}"
            )
        for name in users:
            if not getattr(self, name.removeprefix("MLEG_").lower()).username:
                raise ConfigurationError(f"{name}__AUTH=xoauth2 needs {name}__USERNAME (the mailbox's address)")
        return self
    def real_channels(self) -> list[str]:
        """The settings that reach real people: a Telegram bot, an SMTP server, a mailbox."""
        configured = [
            ("MLEG_TELEGRAM__TOKEN", self.telegram.token is not None and bool(self.telegram.token.get_secret_value())),
            ("MLEG_SMTP__HOST", bool(self.smtp.host)),
            ("MLEG_IMAP__HOST", bool(self.imap.host)),
        ]
        return [name for name, present in configured if present]

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

    def config_layers(self, folder: str = "") -> list[Path]:
        """Where to read `folder`'s files: MLEG_CONFIG_DIR's first, then the shipped ones."""
        return layers_of(self.config_dir, folder)


def _config_file() -> Path | None:
    """The TOML file to read, checked readable and well-formed; None when there is none to read.

    The default `mleg.toml` (MLEG_CONFIG_DIR's, else the shipped one) may be absent (settings
    from the environment only), but a file named in MLEG_CONFIG_FILE must exist: silently
    running without it would start the service on defaults the operator did not choose.
    """
    named = os.environ.get("MLEG_CONFIG_FILE", "").strip()
    if named:
        path, setting = Path(named), "MLEG_CONFIG_FILE"
        if not path.is_file():
            raise ConfigurationError(f"MLEG_CONFIG_FILE {path}: no such file")
    else:
        installed = os.environ.get("MLEG_CONFIG_DIR", "").strip()
        path = find(layers_of(Path(installed) if installed else None), "mleg.toml")
        own = installed and path.parent == Path(installed)
        setting = "MLEG_CONFIG_DIR" if own else "the package's own settings file"
        if not path.is_file():
            return None
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"config file {path}: cannot read it ({exc.strerror}); from {setting}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"config file {path}: not UTF-8 (byte offset {exc.start}); from {setting}") from exc
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message names line and column only, never the offending text.
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}; from {setting}") from exc
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
