"""The e-mail channel sender: outbox rows out over SMTP (aiosmtplib), or into a local Maildir.

With `settings.smtp.host` set, mail goes to that server (none/STARTTLS/TLS; AUTH with a
password when a username and password are set, or SASL XOAUTH2 with an OAuth2 access token
when `smtp.auth = "xoauth2"`, see mail.oauth). Without it (the demo, `mleg chat`), mail lands in the Maildir at
`settings.maildir_path`, where any mail client or `cat` can read it.

The Message-ID is derived from the outbox idempotency key, so a resend after a crash
carries the same Message-ID (the receiving side can drop the duplicate), and the Maildir
file name is derived from it too, so a resend there is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
import os
import ssl
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from core.app.clock import Clock
from core.app.context import AppContext
from core.app.health import HealthRecorder
from core.app.settings import Settings
from core.messaging.outgoing import OutgoingMessage
from core.messaging.sending import DeliveryResult
from core.security.secrets_box import SecretBox
from core.storage.models import OutboxMessage
from core.support.mailbox_rules import email_message_id
from mail.mime import build_email
from mail.oauth import MailLoginError, TokenError, shared_token_source

__all__ = ["CHANNEL", "MaildirChannel", "SmtpChannel", "make_email_channel"]

log = logging.getLogger(__name__)
CHANNEL = "email"


def _message_id(settings: Settings, box: SecretBox, row: OutboxMessage, message: OutgoingMessage) -> str:
    # Core sets it when it must remember it (support answers, to thread replies); else derive it.
    return message.message_id or email_message_id(box, row.idempotency_key, settings.university.message_id_domain)


def _sender(settings: Settings) -> str:
    return settings.smtp.sender


def _reply_to(settings: Settings) -> str | None:
    return settings.smtp.reply_to or settings.university.help_desk_email


class SmtpChannel:
    """Delivers one message per SMTP transaction; 4xx and network trouble retry, 5xx is final."""

    channel = CHANNEL

    def __init__(self, settings: Settings, clock: Clock, *, rate_per_second: float = 5.0) -> None:
        self.settings = settings
        self.clock = clock
        self.box = SecretBox(settings.secret)
        self.rate_per_second = rate_per_second
        # Set by make_email_channel: where the login's outcome is kept for `mleg status`.
        self.health: HealthRecorder | None = None

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.settings.smtp.security == "none":
            return None
        return ssl.create_default_context(cafile=self.settings.smtp.ca_file)

    async def deliver(self, row: OutboxMessage, message: OutgoingMessage) -> DeliveryResult:
        message_id = _message_id(self.settings, self.box, row, message)
        email = build_email(message, sender=_sender(self.settings), recipient=row.recipient,
                            message_id=message_id, date=self.clock.now(), reply_to=_reply_to(self.settings))
        try:
            await self._send(email, row.recipient)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            return self._failure(row, message_id, f"recipient refused: {detail}",
                                 permanent=all(c >= 500 for c in codes), error_class=type(exc).__name__)
        except aiosmtplib.SMTPResponseException as exc:
            # RFC 5321 4.2.1: 4yz is a transient negative reply, 5yz a permanent one.
            return self._failure(row, message_id, f"SMTP {exc.code} {exc.message}", permanent=exc.code >= 500,
                                 error_class=type(exc).__name__)
        except (TokenError, MailLoginError) as exc:
            # The mailbox's credentials, not this message: retried until an operator fixes them.
            self.record_login(False, str(exc))
            return self._failure(row, message_id, f"{type(exc).__name__}: {exc}", permanent=False,
                                 error_class=type(exc).__name__)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Connection refused, TLS trouble, timeouts, a dropped connection: all worth retrying.
            return self._failure(row, message_id, f"{type(exc).__name__}: {exc}", permanent=False,
                                 error_class=type(exc).__name__)
        log.info("e-mail %s (outbox %s, %s) sent via SMTP", message_id, row.id, row.kind)
        return DeliveryResult(ok=True, external_id=message_id)

    def client(self) -> aiosmtplib.SMTP:
        smtp = self.settings.smtp
        return aiosmtplib.SMTP(
            hostname=smtp.host, port=smtp.port, use_tls=smtp.security == "tls",
            # False, not None: None would mean "upgrade if offered", and "none" means plain.
            start_tls=smtp.security == "starttls", tls_context=self._tls_context(), timeout=smtp.timeout_seconds)

    async def _send(self, email: EmailMessage, recipient: str) -> None:
        smtp = self.settings.smtp
        client = self.client()
        async with client:
            await self.login(client)
            await client.send_message(email, sender=smtp.sender, recipients=[recipient])

    async def login(self, client: aiosmtplib.SMTP) -> str:
        """Authenticate on a connected client as configured; returns how (for `mleg mail check`)."""
        smtp = self.settings.smtp
        if smtp.auth == "xoauth2":
            return await self._login_xoauth2(client)
        if smtp.username and smtp.password:
            await client.login(smtp.username, smtp.password.get_secret_value())
            return f"password as {smtp.username}"
        return "no login (no MLEG_SMTP__USERNAME and PASSWORD)"

    async def _login_xoauth2(self, client: aiosmtplib.SMTP) -> str:
        """The cached token; refused (535), once more with a fresh one (RFC 4954 allows a new AUTH)."""
        user = self.settings.smtp.username or ""
        tokens = shared_token_source(self.settings.mail_oauth, self.clock)
        token = await tokens.token(user)
        try:
            await client.auth_xoauth2(user, token.value)
        except aiosmtplib.SMTPAuthenticationError:
            log.warning("SMTP: XOAUTH2 login refused with the cached token; fetching a new one")
            tokens.forget(user)
            token = await tokens.token(user, fresh=True)
            try:
                await client.auth_xoauth2(user, token.value)
            except aiosmtplib.SMTPAuthenticationError as exc:
                raise MailLoginError(f"SMTP XOAUTH2 login as {user} refused with a fresh token: {exc.code} "
                                     f"{exc.message} (is the application allowed to send as this mailbox?)") from exc
        self.record_login(True, f"XOAUTH2 as {user} ({tokens.provider})")
        return f"XOAUTH2 as {user} ({tokens.provider} token valid until {token.expires_at:%Y-%m-%d %H:%M} UTC)"

    def record_login(self, ok: bool, detail: str) -> None:
        if self.health is not None:
            self.health.record("smtp.login", ok, detail)

    def _failure(self, row: OutboxMessage, message_id: str, error: str, *, permanent: bool,
                 error_class: str) -> DeliveryResult:
        # DEBUG: the outbox logs every failed attempt once, at WARNING (core.messaging.delivery_failures).
        log.debug("e-mail %s (outbox %s, %s) %s failure: %s", message_id, row.id, row.kind,
                  "permanent" if permanent else "temporary", error)
        # No retry_after: the outbox's exponential backoff is the right pace for a busy server.
        return DeliveryResult(ok=False, error=error[:1000], permanent=permanent, error_class=error_class)

    async def close(self) -> None:
        return None


class MaildirChannel:
    """Writes each message as a file in a Maildir (`new/`); external_id is the file path."""

    channel = CHANNEL
    rate_per_second = 100.0

    def __init__(self, settings: Settings, clock: Clock, path: Path | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.box = SecretBox(settings.secret)
        self.path = path or settings.maildir_path

    def _write(self, name: str, data: bytes) -> Path:
        # mailbox.Maildir makes only the last folder of its path; the var dir above it may be new.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        box = mailbox.Maildir(self.path, create=True)  # creates tmp/ new/ cur/ when missing
        for folder in ("new", "cur"):
            for existing in (self.path / folder).glob(name + "*"):
                # Delivered before a crash: the same file, not a second copy.
                return existing
        tmp = self.path / "tmp" / name
        tmp.write_bytes(data)
        target = self.path / "new" / name
        # Maildir delivery: write in tmp/, then an atomic rename into new/.
        os.replace(tmp, target)
        box.close()
        return target

    async def deliver(self, row: OutboxMessage, message: OutgoingMessage) -> DeliveryResult:
        message_id = _message_id(self.settings, self.box, row, message)
        email = build_email(message, sender=_sender(self.settings), recipient=row.recipient,
                            message_id=message_id, date=self.clock.now(), reply_to=_reply_to(self.settings))
        name = "mleg-" + message_id.strip("<>").split("@", 1)[0]
        try:
            path = await asyncio.to_thread(self._write, name, email.as_bytes())
        except OSError as exc:
            return DeliveryResult(ok=False, error=f"Maildir {self.path}: {exc}", error_class=type(exc).__name__,
                                  retry_after=timedelta(seconds=30))
        log.info("e-mail %s (outbox %s, %s) written to %s", message_id, row.id, row.kind, path)
        return DeliveryResult(ok=True, external_id=str(path))

    async def close(self) -> None:
        return None


def make_email_channel(ctx: AppContext) -> SmtpChannel | MaildirChannel:
    """The entry point `mleg.channels: email`: SMTP when configured, else the local Maildir."""
    if ctx.settings.smtp.host:
        channel = SmtpChannel(ctx.settings, ctx.clock)
        channel.health = HealthRecorder(ctx.engine, ctx.clock)
        return channel
    return MaildirChannel(ctx.settings, ctx.clock)
