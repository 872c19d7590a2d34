"""The sections of the settings, one model each (`MLEG_<SECTION>__<NAME>`): Telegram, mail, the
university, limits, the credential, reminders, the register, jobs, retention, operations and the web
console; core.app.settings puts them together and loads them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

__all__ = [
    "DEFAULT_MAX_REMOVED_SHARE",
    "CredentialSettings",
    "ImapSettings",
    "JobsSettings",
    "LimitsSettings",
    "MailAuth",
    "MailOAuthSettings",
    "OperationsSettings",
    "RegistrySettings",
    "ReminderSettings",
    "RetentionSettings",
    "Security",
    "SmtpSettings",
    "TelegramSettings",
    "UniversitySettings",
    "WebOidcSettings",
    "WebSettings",
]

DEFAULT_MAX_REMOVED_SHARE = 0.2

Security = Literal["none", "starttls", "tls"]
# How a mail connection logs in: a password, or an OAuth2 access token (SASL XOAUTH2), which
# Microsoft 365 requires and Google Workspace prefers.
MailAuth = Literal["password", "xoauth2"]

# A host name of two or more labels (RFC 1035 letters, digits, hyphens; no label starts or
# ends with a hyphen). Mail to a single-label name is never delivered off the box.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")
_LOCAL_PART = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
# Telegram takes 1-256 characters of these as a webhook's secret token; fewer than 32 can be
# guessed by whoever finds the URL, and a guessed one lets them post updates as any student.
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{32,256}$")
# A Telegram bot's username: 5-32 characters of A-Z, a-z, 0-9 and _, starting with a letter.
_BOT_USERNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{4,31}$")


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
    # The bot's @username, for the https://t.me/<username> link e-mails give: a student told to
    # act "in the chat with the bot" must be able to find it. Empty: e-mails name no link.
    bot_username: str = ""
    staff_chat_id: int | None = None
    staff_user_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = 8443
    messages_per_second: float = 30.0
    messages_per_chat_per_second: float = 1.0
    # Telegram allows about 20 a minute into one group; PTB counts every request about the group
    # (a staff member's membership check too), so the default leaves room for those.
    group_messages_per_minute: float = Field(default=15.0, gt=0)

    _split = field_validator("staff_user_ids", mode="before")(_split_csv)

    @field_validator("bot_username")
    @classmethod
    def _valid_bot_username(cls, name: str) -> str:
        name = name.strip().removeprefix("@")
        if name and not _BOT_USERNAME.match(name):
            raise ValueError(f"{name!r} is not a Telegram bot username (5-32 characters of A-Z, a-z, 0-9, _)")
        return name

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
    auth: MailAuth = "password"
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
    auth: MailAuth = "password"
    security: Security = "tls"
    mailbox: str = "INBOX"
    processed_mailbox: str | None = None
    poll_interval_seconds: float = 60.0
    idle_timeout_seconds: float = 600.0
    max_message_bytes: int = 25 * 1024 * 1024
    auto_replies_per_sender_per_day: int = 3
    ca_file: str | None = None
    # The authserv-id (first word) of the Authentication-Results header the receiving mail
    # server writes: only its DKIM/DMARC results prove a sender (core.support.mail_sender). Unset:
    # no sender is proven, so no mail joins an existing ticket.
    authserv_id: str | None = None
    # Escalations to the staff room per sender (address without +tag) and per sender domain
    # in 24 hours; the excess is kept as held threads (`mleg threads list`), not posted. 0: no cap.
    # Proven senders from university.email_domains are not counted against the domain cap.
    escalations_per_sender_per_day: int = Field(default=5, ge=0)
    escalations_per_domain_per_day: int = Field(default=50, ge=0)
    # The most one mail may take to be read (MIME, HTML, its text); past it, it is quarantined.
    parse_timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("authserv_id")
    @classmethod
    def _authserv_id(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        word = value.strip().lower()
        if any(ch.isspace() or ch in ";=()" for ch in word):
            raise ValueError(f"{value!r} is not an authserv-id (one word, e.g. mx.example.edu.pl)")
        return word


class MailOAuthSettings(BaseModel):
    """Where the OAuth2 access tokens for `auth = "xoauth2"` mail connections come from.

    microsoft: an Entra ID application's client credentials (secret or certificate) with the
    IMAP.AccessAsApp / SMTP.SendAsApp permissions; google: a service account with domain-wide
    delegation, impersonating the mailbox; generic: any token endpoint with client credentials.
    """

    provider: Literal["microsoft", "google", "generic"] | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    # PEM file holding the application's private key and its certificate (instead of a secret).
    certificate_file: str | None = None
    certificate_thumbprint: str | None = None
    service_account_file: str | None = None
    token_url: str | None = None
    scopes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A token is replaced this long before it expires, so no login uses one about to die.
    refresh_margin_seconds: float = Field(default=300.0, ge=0)
    timeout_seconds: float = Field(default=30.0, gt=0)

    _split = field_validator("scopes", mode="before")(_split_csv)

    def missing(self) -> list[str]:
        """The settings this provider still needs, by their environment names."""
        prefix = "MLEG_MAIL_OAUTH__"
        needed: dict[str, object] = {}
        if self.provider == "microsoft":
            needed = {"TENANT_ID": self.tenant_id, "CLIENT_ID": self.client_id,
                      "CLIENT_SECRET or CERTIFICATE_FILE": self.client_secret or self.certificate_file}
            if self.certificate_file and not self.client_secret:
                needed["CERTIFICATE_THUMBPRINT"] = self.certificate_thumbprint
        elif self.provider == "google":
            needed = {"SERVICE_ACCOUNT_FILE": self.service_account_file}
        elif self.provider == "generic":
            needed = {"TOKEN_URL": self.token_url, "CLIENT_ID": self.client_id,
                      "CLIENT_SECRET": self.client_secret}
        else:
            return [f"{prefix}PROVIDER (microsoft, google or generic)"]
        return [prefix + name for name, value in needed.items() if not value]


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
    # Wrong identifications counted against one album (or ELS) number, from any account: higher
    # than an account's limit, since anyone who knows the number can use it up, and the student
    # whose number it is waits out the lock too (they are told by e-mail; staff can lift it with
    # `mleg students unlock ALBUM`).
    # Not set: twice guesses_per_hour (10), so an installation that raised that one still starts.
    album_guesses_per_hour: int | None = None
    guess_window_minutes: int = 60
    chat_code_ttl_minutes: int = 15

    @model_validator(mode="after")
    def _album_above_account(self) -> LimitsSettings:
        if self.album_guesses_per_hour is None:
            self.album_guesses_per_hour = 2 * self.guesses_per_hour
        if self.album_guesses_per_hour <= self.guesses_per_hour:
            raise ValueError(
                f"album_guesses_per_hour ({self.album_guesses_per_hour}) must be more than "
                f"guesses_per_hour ({self.guesses_per_hour}): strangers must not lock a student out "
                "as easily as one account locks itself"
            )
        return self

    @property
    def album_limit(self) -> int:
        """album_guesses_per_hour as validated (never None then)."""
        return self.album_guesses_per_hour or 2 * self.guesses_per_hour


class CredentialSettings(BaseModel):
    activation_window_days: int = 30
    renewal_window_days: int = 30
    # Staff resending a pending credential's activation data (core.credentials.service.resend_activation):
    # at most this many times a day per credential, so a mistaken loop cannot flood a student.
    activation_resends_per_day: int = Field(default=3, ge=1)
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


# Default rows per job transaction, by database. SQLite has one writer at a time: a job's
# transaction keeps every chat turn and mail waiting for the write lock, so batches stay short.
# PostgreSQL locks rows, not the database: only a turn touching one of the batch's own rows
# waits, so longer batches spread each batch's fixed cost (the sweep over a million rows
# measured 2.37x a bare UPDATE at 1,000, 1.98x at 5,000: bench.sweep).
JOB_BATCH_SIZES = {"sqlite": 1000, "postgresql": 5000}


class JobsSettings(BaseModel):
    sweep_interval_minutes: int = 15
    reminders_interval_minutes: int = 60
    outbox_interval_seconds: float = 5.0
    register_sync_path: str | None = None
    register_sync_cron: str = "0 3 * * *"
    retention_days: int = 365
    # Rows per write transaction in the jobs (sweep, reminders, retention). Unset, it depends on
    # the database (see batch_size_for); MLEG_JOBS__BATCH_SIZE sets one size for every database.
    batch_size: int | None = Field(default=None, ge=1)

    def batch_size_for(self, dialect: str) -> int:
        """The batch size on a database of this SQLAlchemy dialect name: the one set, else its default."""
        if self.batch_size is not None:
            return self.batch_size
        return JOB_BATCH_SIZES.get(dialect, JOB_BATCH_SIZES["sqlite"])


class RetentionSettings(BaseModel):
    """How long each kind of personal data is kept; core.jobs.retention deletes what is older.

    The first three default to `jobs.retention_days` (MLEG_JOBS__RETENTION_DAYS), their older
    common setting. `mleg status` shows every rule in force.
    """

    # Support threads (their messages and raw e-mails): closed ones after this many days, and
    # ones never closed after this many days without any activity.
    threads_days: int | None = Field(default=None, ge=1)
    # A chat's conversation state after this many days untouched.
    conversations_days: int | None = Field(default=None, ge=1)
    # Raw support e-mails of no thread (automatic replies ignored, quarantined ones).
    inbound_mail_days: int | None = Field(default=None, ge=1)
    # Sent and failed outbox rows (addresses, chat ids, the sender's last error); the body of a
    # sent message is wiped at once. At least a day: the mailbox's daily per-sender cap counts them.
    outbox_days: int = Field(default=30, ge=1)
    # The audit trail (who did what to which student, credential or thread).
    audit_days: int = Field(default=5 * 365, ge=1)
    # Acceptances of the terms by chat accounts no longer linked to the service.
    terms_acceptance_days: int = Field(default=5 * 365, ge=1)
    # Ended (expired, revoked) credentials with their history, applications and reminder log,
    # counted from the end.
    ended_credentials_days: int = Field(default=5 * 365, ge=1)
    # Former students (removed or graduated, no live credential): the register row and all
    # that is theirs, counted from the removal or the last change of the row.
    former_students_days: int = Field(default=5 * 365, ge=1)


class OperationsSettings(BaseModel):
    # Told by e-mail when the staff room cannot be reached (core.messaging.delivery_alerts);
    # unset: only the log says it.
    alert_email: str | None = None
    # A delivery failing this many attempts in a row is logged at ERROR (once) and may raise an alert;
    # at most the outbox's 12 attempts (core.messaging.sending.MAX_ATTEMPTS), after which a row is given up anyway.
    error_after_attempts: int = Field(default=4, ge=1, le=12)
    # At most one alert of each sort (staff room, operators' e-mail) in this many minutes.
    alert_interval_minutes: int = Field(default=60, ge=1)

    _alert_email = field_validator("alert_email")(_check_optional_address)


class WebOidcSettings(BaseModel):
    """Single sign-on through the university's OpenID Connect provider (authorization code + PKCE).

    On when `issuer` and `client_id` are set. A staff member signs in as the account (`mleg staff
    add LOGIN --sso`) named by the ID token's `login_claim`; admins only when the provider says a
    second factor was used (`amr` holds one of `admin_amr`), as the provider then owns the MFA.
    """

    issuer: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    # The callback as the browser reaches it through the reverse proxy: https://desk.example.edu.pl/sign-in/oidc/callback
    redirect_url: str | None = None
    scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["openid", "profile", "email"])
    login_claim: str = "preferred_username"
    admin_amr: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["mfa", "otp", "hwk", "swk", "sc"])
    timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("scopes", "admin_amr", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @property
    def enabled(self) -> bool:
        return bool(self.issuer and self.client_id)


class WebSettings(BaseModel):
    """The staff web console (package web/): served by `mleg serve` when `port` is set, or by `mleg web`."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    # Addresses whose X-Forwarded-For/-Proto are believed (the reverse proxy); "*" believes anyone.
    forwarded_allow_ips: str = "127.0.0.1"
    # Cookies only over HTTPS. Off only for plain-HTTP tests on the loopback.
    secure_cookies: bool = True
    # A session ends after this long without a request, and after `session_hours` in any case.
    session_idle_minutes: int = Field(default=30, ge=1)
    session_hours: int = Field(default=10, ge=1)
    # Failed sign-ins allowed per login and per address within `sign_in_window_minutes`.
    sign_in_attempts_per_login: int = Field(default=5, ge=1)
    sign_in_attempts_per_address: int = Field(default=20, ge=1)
    sign_in_window_minutes: int = Field(default=15, ge=1)
    # The first answer to an escalated thread is due this long after it came in (the inbox shows it).
    first_response_minutes: int = Field(default=8 * 60, ge=1)
    # How often an open inbox asks for new escalations (htmx polling).
    inbox_refresh_seconds: int = Field(default=10, ge=1)
    # Under `mleg serve`, serve the console from a child process of its own (web.console_process):
    # staff's pages and /metrics scrapes then never take the chat's CPU time. Off: on the bot's loop.
    own_process: bool = True
    # The issuer shown in authenticator apps for `mleg staff totp`.
    totp_issuer: str = "mLegitymacja"
    oidc: WebOidcSettings = Field(default_factory=WebOidcSettings)
