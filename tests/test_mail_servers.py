"""Proves the loopback mail servers work: SMTP in (plain/STARTTLS/TLS, AUTH), IMAP out, faults."""

from __future__ import annotations

import asyncio
import ssl
from email.message import EmailMessage

import aioimaplib
import aiosmtplib
import pytest

from tests.servers.dovecot import DovecotServer
from tests.servers.fixtures import SmtpServerFactory
from tests.servers.smtp_relay import SmtpRelay

SENDER = "mleg@uni.example.test"
CREDENTIALS = ("mleg-bot", "s3cret")


def make_message(
    to: str, subject: str, body: str = "Dzień dobry, legitymacja gotowa."
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


async def imap_login(dovecot: DovecotServer, user: str) -> aioimaplib.IMAP4:
    imap = aioimaplib.IMAP4(host=dovecot.host, port=dovecot.imap_port, timeout=10)
    await imap.wait_hello_from_server()
    response = await imap.login(user, dovecot.password)
    assert response.result == "OK", response
    return imap


async def imap_fetch_all(dovecot: DovecotServer, user: str) -> list[bytes]:
    imap = await imap_login(dovecot, user)
    try:
        assert (await imap.select("INBOX")).result == "OK"
        search = await imap.uid_search("ALL", charset=None)
        assert search.result == "OK", search
        uids = search.lines[0].split() if search.lines else []
        messages: list[bytes] = []
        for uid in uids:
            fetched = await imap.uid("fetch", uid.decode(), "(BODY.PEEK[])")
            assert fetched.result == "OK", fetched
            # The message body is the one literal in the response, delivered as bytearray.
            messages += [bytes(line) for line in fetched.lines if isinstance(line, bytearray)]
        return messages
    finally:
        await imap.logout()


async def send(
    server: SmtpRelay,
    msg: EmailMessage,
    *,
    auth: tuple[str, str] | None = None,
    tls_context: ssl.SSLContext | None = None,
) -> None:
    await aiosmtplib.send(
        msg,
        hostname=server.host,
        port=server.port,
        use_tls=server.security == "tls",
        start_tls=server.security == "starttls",
        tls_context=tls_context,
        username=auth[0] if auth else None,
        password=auth[1] if auth else None,
        timeout=15,
    )


async def test_plain_smtp_reaches_imap(
    smtp_server: SmtpRelay, dovecot: DovecotServer, mailbox_user: str
) -> None:
    await send(smtp_server, make_message(mailbox_user, "plain"))

    [received] = smtp_server.messages
    assert received.mail_from == SENDER
    assert received.rcpt_tos == (mailbox_user,)
    assert b"Subject: plain" in received.data
    assert not received.secure
    assert received.login is None

    [stored] = await imap_fetch_all(dovecot, mailbox_user)
    assert b"Subject: plain" in stored
    assert f"Delivered-To: {mailbox_user}".encode() in stored


@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
async def test_security_modes_with_auth(
    smtp_server_factory: SmtpServerFactory,
    dovecot: DovecotServer,
    mailbox_user: str,
    security: str,
) -> None:
    server = smtp_server_factory(security=security, auth=CREDENTIALS)  # type: ignore[arg-type]
    context = server.client_ssl_context() if security != "none" else None

    await send(
        server, make_message(mailbox_user, f"via {security}"), auth=CREDENTIALS, tls_context=context
    )

    [received] = server.messages
    assert received.secure == (security != "none")
    assert received.login == CREDENTIALS[0]
    [stored] = await imap_fetch_all(dovecot, mailbox_user)
    assert f"Subject: via {security}".encode() in stored


async def test_auth_is_enforced(smtp_server_factory: SmtpServerFactory, mailbox_user: str) -> None:
    server = smtp_server_factory(auth=CREDENTIALS)

    with pytest.raises(aiosmtplib.SMTPSenderRefused) as no_auth:
        await send(server, make_message(mailbox_user, "no auth"))
    assert no_auth.value.code == 530
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as bad_auth:
        await send(server, make_message(mailbox_user, "bad"), auth=(CREDENTIALS[0], "wrong"))
    assert bad_auth.value.code == 535
    assert server.messages == []


async def test_starttls_is_required_and_cert_is_verified(
    smtp_server_factory: SmtpServerFactory, mailbox_user: str
) -> None:
    server = smtp_server_factory(security="starttls")

    plain = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False, timeout=10)
    async with plain:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await plain.send_message(make_message(mailbox_user, "no tls"))
    assert refused.value.code == 530
    # Without the test CA the default trust store must reject the throwaway certificate.
    with pytest.raises(ssl.SSLCertVerificationError):
        await send(
            server,
            make_message(mailbox_user, "untrusted"),
            tls_context=ssl.create_default_context(),
        )
    assert server.messages == []


async def test_imap_advertises_and_serves_idle(
    smtp_server: SmtpRelay, dovecot: DovecotServer, mailbox_user: str
) -> None:
    imap = await imap_login(dovecot, mailbox_user)
    try:
        assert imap.has_capability("IDLE")
        assert (await imap.select("INBOX")).result == "OK"
        idle = await imap.idle_start(timeout=20)

        await send(smtp_server, make_message(mailbox_user, "pushed"))

        pushed: list[bytes] = []
        while not any(line.endswith(b"EXISTS") for line in pushed):
            pushed += await imap.wait_server_push(timeout=10)
        imap.idle_done()
        assert (await asyncio.wait_for(idle, 10)).result == "OK"
    finally:
        await imap.logout()


async def test_temporary_and_permanent_failures(
    smtp_server: SmtpRelay, dovecot: DovecotServer, mailbox_user: str
) -> None:
    smtp_server.fail_next(1, code=451)
    with pytest.raises(aiosmtplib.SMTPDataError) as temporary:
        await send(smtp_server, make_message(mailbox_user, "first try"))
    assert temporary.value.code == 451

    smtp_server.fail_next(1, code=550, stage="rcpt")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as permanent:
        await send(smtp_server, make_message(mailbox_user, "rejected"))
    assert permanent.value.recipients[0].code == 550

    await send(smtp_server, make_message(mailbox_user, "retry"))
    assert [m.rcpt_tos for m in smtp_server.messages] == [(mailbox_user,)]
    [stored] = await imap_fetch_all(dovecot, mailbox_user)
    assert b"Subject: retry" in stored


async def test_smtp_server_down_and_back(smtp_server: SmtpRelay, mailbox_user: str) -> None:
    smtp_server.stop()
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await send(smtp_server, make_message(mailbox_user, "down"))

    smtp_server.start()
    await send(smtp_server, make_message(mailbox_user, "back"))
    assert len(smtp_server.messages) == 1


@pytest.mark.process
async def test_dovecot_restart_keeps_mail_and_ports(
    smtp_server: SmtpRelay, dovecot: DovecotServer, mailbox_user: str
) -> None:
    await send(smtp_server, make_message(mailbox_user, "before restart"))
    ports = (dovecot.imap_port, dovecot.lmtp_port)

    await asyncio.to_thread(dovecot.restart)

    assert (dovecot.imap_port, dovecot.lmtp_port) == ports
    await send(smtp_server, make_message(mailbox_user, "after restart"))
    stored = await imap_fetch_all(dovecot, mailbox_user)
    assert [b"Subject: before restart" in m for m in stored] == [True, False]
    assert b"Subject: after restart" in stored[1]
    assert dovecot.fetch_all(mailbox_user) == stored


@pytest.mark.process
async def test_relay_reports_451_while_dovecot_is_down(
    smtp_server: SmtpRelay, dovecot: DovecotServer, mailbox_user: str
) -> None:
    await asyncio.to_thread(dovecot.kill)
    try:
        with pytest.raises(aiosmtplib.SMTPDataError) as down:
            await send(smtp_server, make_message(mailbox_user, "mailbox down"))
        assert down.value.code == 451
    finally:
        await asyncio.to_thread(dovecot.start)
    assert smtp_server.messages == []
