"""The support mailbox over TLS and STARTTLS against a real Dovecot: mail read, credentials never in clear."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aioimaplib
import pytest
from sqlmodel import Session, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.app.errors import ConfigurationError
from core.messaging import sending
from core.storage.models import OutboxMessage
from mail.channel import SmtpChannel
from mail.frontend import MailFrontend
from mail.imap import ImapTlsError
from tests.mail_samples.kit import mail_ctx, parse, sample
from tests.servers.dovecot import DovecotServer
from tests.servers.smtp_relay import SmtpRelay


@dataclass
class Reader:
    """A support mailbox on one Dovecot and the frontend configured to read it."""

    ctx: AppContext
    dovecot: DovecotServer
    address: str
    frontend: MailFrontend

    def login_lines(self) -> list[str]:
        """Dovecot's "Login:" lines for this mailbox (each ends with "TLS" or "secured")."""
        return [line for line in self.dovecot.read_log().splitlines()
                if "Login: " in line and f"user=<{self.address}>" in line]


ReaderFactory = Callable[..., Reader]


@pytest.fixture
def make_reader(tmp_path: Path, sqlite_url: str, clock: FixedClock,
                smtp_server: SmtpRelay) -> Iterator[ReaderFactory]:
    """Build a reader for `server` with the given security, port and CA file."""
    contexts: list[AppContext] = []

    def make(server: DovecotServer, security: str, port: int, ca_file: Path | None) -> Reader:
        address = server.new_user(prefix="support")
        ctx = mail_ctx(
            tmp_path, sqlite_url, clock,
            imap={"host": server.host, "port": port, "security": security, "username": address,
                  "password": server.password, "ca_file": str(ca_file) if ca_file else None},
            smtp={"host": smtp_server.host, "port": smtp_server.port, "security": "none", "sender": address},
            university={"help_desk_email": address},
        )
        contexts.append(ctx)
        return Reader(ctx, server, address, MailFrontend(ctx))

    yield make
    for ctx in contexts:
        ctx.engine.dispose()


@pytest.fixture
def sent_commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every IMAP command the client writes (names only: no password kept)."""
    names: list[str] = []
    send = aioimaplib.IMAP4ClientProtocol.send

    def spy(self: aioimaplib.IMAP4ClientProtocol, line: str, scrub: str | None = None) -> None:
        names.append(line.split(" ", 2)[1])
        send(self, line, scrub)

    monkeypatch.setattr(aioimaplib.IMAP4ClientProtocol, "send", spy)
    return names


def _port(server: DovecotServer, security: str) -> int:
    return server.imaps_port if security == "tls" else server.imap_port


async def _new_log(server: DovecotServer, since: int, text: str, within: float = 5.0) -> str:
    """Dovecot's log after offset `since`, once it contains `text` (its log process writes late)."""
    deadline = time.monotonic() + within
    while text not in (new := server.read_log()[since:]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not logged; log since the test began:\n{new}")
        await asyncio.sleep(0.05)
    return new


@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_mail_is_stored_and_answered_over_a_verified_tls_connection(
    make_reader: ReaderFactory, dovecot_tls: DovecotServer, smtp_server: SmtpRelay, security: str,
) -> None:
    assert dovecot_tls.tls is not None
    reader = make_reader(dovecot_tls, security, _port(dovecot_tls, security), dovecot_tls.tls.ca_cert_path)
    student = dovecot_tls.new_user()
    dovecot_tls.deliver(reader.address, sample("win1250_question.eml", support=reader.address, n="1",
                                               sender=student))

    report = await reader.frontend.process_once()

    assert report.stored == 1 and len(report.flagged) == 1
    [processed] = report.processed
    assert processed.outcome is not None
    assert processed.outcome.reason == "answered from the FAQ (email_not_arrived)"
    with Session(reader.ctx.engine) as session:
        assert len(session.exec(select(OutboxMessage).where(OutboxMessage.channel == "email")).all()) == 1
    channel = SmtpChannel(reader.ctx.settings, reader.ctx.clock)
    await sending.drain_once(reader.ctx.engine, reader.ctx.box, channel="email", now=reader.ctx.clock.now,
                            deliver=channel.deliver)
    [answer] = [parse(m.data) for m in smtp_server.messages]
    assert answer["To"] == student and answer["Auto-Submitted"] == "auto-replied"
    # Dovecot marks a login over TLS "TLS" (a plain one on loopback says "secured").
    [login] = reader.login_lines()
    assert ", TLS, session=" in login


@pytest.mark.process
async def test_starttls_asks_capabilities_again_and_keeps_the_connection_loss_handling(
    make_reader: ReaderFactory, dovecot_tls: DovecotServer, sent_commands: list[str],
) -> None:
    assert dovecot_tls.tls is not None
    reader = make_reader(dovecot_tls, "starttls", dovecot_tls.imap_port, dovecot_tls.tls.ca_cert_path)

    imap = await reader.frontend._connect()
    try:
        assert sent_commands == ["CAPABILITY", "STARTTLS", "CAPABILITY", "LOGIN"]
        assert imap.protocol.transport.get_extra_info("ssl_object") is not None
        # What the server offered in clear (STARTTLS itself) is forgotten (RFC 3501 6.2.1).
        assert not imap.has_capability("STARTTLS") and imap.has_capability("IDLE")
        await reader.frontend._select(imap)

        await asyncio.to_thread(dovecot_tls.kick, reader.address)  # the server drops the TLS connection

        deadline = time.monotonic() + 5
        while imap.protocol.state != aioimaplib.LOGOUT:
            assert time.monotonic() < deadline, "connection loss not seen through the TLS transport"
            await asyncio.sleep(0.05)
        # Refused at once by the client's own state (LOGOUT), not by a command timing out.
        with pytest.raises(aioimaplib.Abort, match="illegal in state LOGOUT"):
            await reader.frontend._select(imap)
    finally:
        await reader.frontend._logout(imap)


@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_untrusted_certificate_fails_clearly_and_never_logs_in(
    make_reader: ReaderFactory, dovecot_tls: DovecotServer, sent_commands: list[str], security: str,
) -> None:
    # No CA file: the system store, which does not know the test CA.
    reader = make_reader(dovecot_tls, security, _port(dovecot_tls, security), None)
    log_start = len(dovecot_tls.read_log())

    with pytest.raises(ImapTlsError, match=r"certificate verify failed|unable to get local issuer") as failure:
        await reader.frontend.process_once()

    assert "MLEG_IMAP__CA_FILE" in str(failure.value) and "\n" not in str(failure.value)
    assert sent_commands == ([] if security == "tls" else ["CAPABILITY", "STARTTLS"])
    # Only a failed handshake logs "TLS handshaking"; the connection was closed, not left open.
    new_log = await _new_log(dovecot_tls, log_start, "TLS handshaking: Connection closed")
    # Dovecot words it by how soon the client left: both mean no login was tried.
    assert "no auth attempts" in new_log or "disconnected before auth was ready" in new_log
    assert reader.address not in new_log and reader.login_lines() == []


async def test_starttls_refused_when_the_server_does_not_offer_it(
    make_reader: ReaderFactory, dovecot: DovecotServer, sent_commands: list[str],
) -> None:
    # The session Dovecot runs with `ssl = no`: it offers no STARTTLS.
    reader = make_reader(dovecot, "starttls", dovecot.imap_port, None)
    log_start = len(dovecot.read_log())

    with pytest.raises(ConfigurationError, match="does not offer STARTTLS; refusing to log in in clear"):
        await reader.frontend.process_once()

    assert sent_commands == ["CAPABILITY"]  # neither STARTTLS nor, above all, LOGIN
    new_log = await _new_log(dovecot, log_start, "no auth attempts")
    assert reader.address not in new_log and reader.login_lines() == []
