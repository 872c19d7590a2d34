"""A real SMTP server on loopback (aiosmtpd) that records each message and relays it to Dovecot."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import shutil
import smtplib
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.servers.ports import free_port

if TYPE_CHECKING:
    from tests.servers.dovecot import DovecotServer

Security = Literal["none", "starttls", "tls"]
FailStage = Literal["mail", "rcpt", "data"]
DEFAULT_DATA_SIZE_LIMIT = 40 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted SMTP transaction as the server saw it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    secure: bool
    login: str | None
    peer: str
    received_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class TlsCertificate:
    """A throwaway CA plus a server certificate for localhost / 127.0.0.1, as PEM files."""

    ca_cert_path: Path
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        """SSLContext the server presents."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """SSLContext that trusts only the throwaway CA (hostname checking stays on)."""
        return ssl.create_default_context(cafile=str(self.ca_cert_path))


def generate_certificate(
    directory: Path, hostnames: tuple[str, ...] = ("localhost",)
) -> TlsCertificate:
    """Write a CA and a server cert for hostnames + 127.0.0.1 + ::1 into ``directory``."""
    now = dt.datetime.now(dt.UTC)
    # A separate CA keeps the chain valid under OpenSSL's strict X.509 checks.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mleg test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in hostnames]
    sans += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = TlsCertificate(
        ca_cert_path=directory / "ca.pem",
        cert_path=directory / "server.pem",
        key_path=directory / "server.key",
    )
    paths.ca_cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths.key_path.chmod(0o600)
    return paths


class _Handler:
    """aiosmtpd handler: injected failures, recording, LMTP hand-off."""

    def __init__(self, relay: SmtpRelay) -> None:
        self.relay = relay

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        session.mleg_failure = self.relay._take_failure()  # type: ignore[attr-defined]
        failure = self._failure_for(session, "mail")
        if failure:
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        failure = self._failure_for(session, "rcpt")
        if failure:
            return failure
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        failure = self._failure_for(session, "data")
        if failure:
            return failure
        raw = envelope.original_content or b""
        login: str | None = None
        if isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode(errors="replace")
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=raw,
            secure=server.transport is not None
            and server.transport.get_extra_info("ssl_object") is not None,
            login=login,
            peer=str(session.peer[0]) if session.peer else "",
        )
        if self.relay.dovecot is not None:
            try:
                await asyncio.to_thread(self.relay._lmtp_forward, message)
            except (OSError, smtplib.SMTPException) as exc:
                return f"451 4.3.0 mailbox delivery failed: {exc}"
        self.relay._record(message)
        delay = self.relay._take_delay()
        if delay:
            await asyncio.sleep(delay)  # accepted and recorded; only the answer is late
        return "250 2.0.0 OK queued"

    @staticmethod
    def _failure_for(session: Session, stage: FailStage) -> str | None:
        failure: tuple[FailStage, str] | None = getattr(session, "mleg_failure", None)
        if failure is not None and failure[0] == stage:
            return failure[1]
        return None


class _XOAuth2Handler(_Handler):
    """Also offers AUTH XOAUTH2, checking the bearer token with the relay's `xoauth2` callable."""

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        checker = self.relay.xoauth2
        assert checker is not None
        try:
            fields = base64.b64decode(args[1]).decode().split("\x01")
            user = next(f[5:] for f in fields if f.startswith("user="))
            token = next(f[12:] for f in fields if f.startswith("auth=Bearer "))
        except (IndexError, ValueError, StopIteration):
            return AuthResult(success=False, handled=False)
        if checker(user, token):
            self.relay.xoauth2_logins.append(user)
            return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))
        # RFC 7628 3.2.2 as Gmail and Exchange do it: an error challenge, then 535 after the client's empty line.
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))
        return AuthResult(success=False, handled=False)


class _Controller(Controller):
    """Controller whose SMTP allows AUTH without STARTTLS when asked to."""

    def __init__(self, *args: Any, auth_over_plain: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.auth_over_plain = auth_over_plain

    def factory(self) -> SMTP:
        server = SMTP(self.handler, **self.SMTP_kwargs)
        # aiosmtpd only counts STARTTLS as "TLS", so implicit-TLS servers must drop the
        # requirement too; setting it after __init__ avoids its UserWarning on every connect.
        if self.auth_over_plain:
            server._auth_require_tls = False
        return server


class SmtpRelay:
    """Loopback SMTP server (own thread) that records envelopes and relays them to Dovecot.

    ``security``: "none" (plain), "starttls" (STARTTLS required before MAIL) or "tls"
    (implicit TLS, like port 465). ``auth=(user, password)`` turns on required AUTH
    PLAIN/LOGIN. Clients trust the server via ``client_ssl_context()`` or ``ca_cert_path``.
    """

    def __init__(
        self,
        dovecot: DovecotServer | None = None,
        *,
        security: Security = "none",
        auth: tuple[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str = "localhost",
        data_size_limit: int = DEFAULT_DATA_SIZE_LIMIT,
        max_recorded: int = 1000,
        xoauth2: Callable[[str, str], bool] | None = None,
    ) -> None:
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"unknown security {security!r}")
        self.dovecot = dovecot
        self.security: Security = security
        self.auth = auth
        # With it, AUTH XOAUTH2 is offered and required; it says whether (user, token) may log in.
        self.xoauth2 = xoauth2
        self.xoauth2_logins: list[str] = []
        self.host = host
        self.port = port or free_port(host)
        self.hostname = hostname
        self.data_size_limit = data_size_limit
        self.max_recorded = max_recorded
        self._tmpdir: Path | None = None
        self.certificate: TlsCertificate | None = None
        self._controller: Controller | None = None
        self._messages: list[ReceivedMessage] = []
        self._cond = threading.Condition()
        self._fail_budget = 0
        self._fail_reply = ""
        self._fail_stage: FailStage = "data"
        self._delays: list[float] = []

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the server accepts connections."""
        return self._controller is not None

    @property
    def ca_cert_path(self) -> Path | None:
        """PEM of the CA a client must trust (None when security == "none")."""
        return self.certificate.ca_cert_path if self.certificate else None

    def client_ssl_context(self) -> ssl.SSLContext:
        """SSLContext that trusts this server's certificate (for aiosmtplib tls_context=)."""
        if self.certificate is None:
            raise RuntimeError("this SMTP server has no TLS (security='none')")
        return self.certificate.client_context()

    def start(self) -> None:
        """Start listening on ``host:port`` (same port again after ``stop()``)."""
        if self._controller is not None:
            return
        if self.security != "none" and self.certificate is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="mleg-smtp-"))
            self.certificate = generate_certificate(self._tmpdir, (self.hostname,))
        kwargs: dict[str, Any] = {
            "data_size_limit": self.data_size_limit,
            # The whole message is relayed as bytes; no str decoding needed.
            "decode_data": False,
        }
        server_ctx = self.certificate.server_context() if self.certificate else None
        if self.security == "starttls":
            kwargs["tls_context"] = server_ctx
            kwargs["require_starttls"] = True
        if self.auth is not None or self.xoauth2 is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
        controller = _Controller(
            _XOAuth2Handler(self) if self.xoauth2 is not None else _Handler(self),
            hostname=self.host,
            port=self.port,
            ssl_context=server_ctx if self.security == "tls" else None,
            server_hostname=self.hostname,
            auth_over_plain=self.security != "starttls",
            **kwargs,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening; recorded messages and the certificate are kept for ``start()``."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def close(self) -> None:
        """Stop and delete the certificate files."""
        self.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self.certificate = None

    def __enter__(self) -> SmtpRelay:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- fault injection ---------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        code: int = 451,
        stage: FailStage = "data",
        message: str | None = None,
    ) -> None:
        """Answer ``code`` (4xx temporary, 5xx permanent) for the next ``count`` transactions.

        ``stage`` picks the command that gets the error: MAIL FROM, every RCPT TO, or the
        end of DATA. ``count=0`` clears it.
        """
        if not 400 <= code < 600:
            raise ValueError("code must be a 4xx or 5xx SMTP reply")
        enhanced = "4.3.0" if code < 500 else "5.7.1"
        text = message or ("temporary failure, try again later" if code < 500 else "rejected")
        with self._cond:
            self._fail_budget = count
            self._fail_reply = f"{code} {enhanced} {text}"
            self._fail_stage = stage

    def delay_answers(self, seconds: float, count: int = 1) -> None:
        """Accept the next ``count`` messages at once and answer their DATA ``seconds`` later:
        the client has the message in flight meanwhile."""
        with self._cond:
            self._delays.extend([seconds] * count)

    def _take_delay(self) -> float:
        with self._cond:
            return self._delays.pop(0) if self._delays else 0.0

    def _take_failure(self) -> tuple[FailStage, str] | None:
        with self._cond:
            if self._fail_budget <= 0:
                return None
            self._fail_budget -= 1
            return self._fail_stage, self._fail_reply

    # -- recorded mail -----------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Snapshot of the accepted messages, oldest first."""
        with self._cond:
            return list(self._messages)

    def clear(self) -> None:
        """Forget recorded messages."""
        with self._cond:
            self._messages.clear()

    def wait_for_messages(self, count: int = 1, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until ``count`` messages were accepted (TimeoutError otherwise)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(f"got {len(self._messages)} message(s), wanted {count}")
            return list(self._messages)

    async def wait_for_messages_async(
        self, count: int = 1, within: float = 10.0
    ) -> list[ReceivedMessage]:
        """Like ``wait_for_messages`` (``within`` seconds) without blocking the event loop."""
        deadline = time.monotonic() + within
        while True:
            messages = self.messages
            if len(messages) >= count:
                return messages
            if time.monotonic() >= deadline:
                raise TimeoutError(f"got {len(messages)} message(s), wanted {count}")
            await asyncio.sleep(0.02)

    def _record(self, message: ReceivedMessage) -> None:
        with self._cond:
            self._messages.append(message)
            if len(self._messages) > self.max_recorded:
                del self._messages[: len(self._messages) - self.max_recorded]
            self._cond.notify_all()

    # -- internals ---------------------------------------------------------------------

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        if (
            self.auth is not None
            and isinstance(auth_data, LoginPassword)
            and auth_data.login.decode(errors="replace") == self.auth[0]
            and auth_data.password.decode(errors="replace") == self.auth[1]
        ):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    def _lmtp_forward(self, message: ReceivedMessage) -> None:
        assert self.dovecot is not None
        with smtplib.LMTP(self.dovecot.host, self.dovecot.lmtp_port, timeout=15) as lmtp:
            lmtp.sendmail(message.mail_from, list(message.rcpt_tos), message.data)
