"""Outgoing e-mail: MIME shape, the activation e-mail read back over IMAP, SMTP failures, Maildir."""

from __future__ import annotations

import io
import mailbox
from datetime import datetime, timedelta
from pathlib import Path

import PIL.Image
import pytest
import zxingcpp
from sqlmodel import Session, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.credentials.compose import activation_email
from core.credentials.issuer import ActivationData, ActivationIssuer
from core.credentials.service import request_credential
from core.messaging import outbox, sending
from core.messaging.outgoing import OutgoingMessage
from core.security.secrets_box import SecretBox
from core.storage.models import Credential, OutboxMessage, OutboxStatus
from core.support.threads import email_message_id
from mail.channel import MaildirChannel, SmtpChannel, make_email_channel
from mail.mime import build_email
from tests.factories import add_student
from tests.mail_samples.kit import mail_ctx, parse, part_types
from tests.servers.dovecot import DovecotServer
from tests.servers.fixtures import SmtpServerFactory
from tests.servers.smtp_relay import SmtpRelay


class RecordingIssuer:
    """The real issuer, keeping what it issued so the test knows the QR payload."""

    def __init__(self, inner: ActivationIssuer) -> None:
        self.inner = inner
        self.issued: list[ActivationData] = []

    def issue(self, credential: Credential, now: datetime, window: timedelta) -> ActivationData:
        data = self.inner.issue(credential, now, window)
        self.issued.append(data)
        return data

    def redeem(self, credential: Credential, code: str, now: datetime) -> None:
        self.inner.redeem(credential, code, now)

    def invalidate(self, credential: Credential) -> None:
        self.inner.invalidate(credential)


def smtp_settings(server: SmtpRelay, **extra: object) -> dict[str, object]:
    return {"smtp": {"host": server.host, "port": server.port, "security": server.security,
                     "sender": "mlegitymacja@uni.example.test", **extra}}


def apply_for(ctx: AppContext, email: str, language: str = "pl") -> tuple[ActivationData, int]:
    recorder = RecordingIssuer(ctx.issuer)
    ctx.issuer = recorder
    with Session(ctx.engine) as session:
        student, _ = add_student(session, ctx.box, email=email)
        request_credential(ctx, session, student, channel="test", actor="test", language=language)
        session.commit()
        row_id = session.exec(select(OutboxMessage)).one().id
    return recorder.issued[-1], row_id or 0


def outbox_row(ctx: AppContext, row_id: int) -> OutboxMessage:
    with Session(ctx.engine) as session:
        row = session.get(OutboxMessage, row_id)
        assert row is not None
        return row


async def drain(ctx: AppContext) -> int:
    sender = make_email_channel(ctx)
    return await sending.drain_once(ctx.engine, ctx.box, channel="email", now=ctx.clock.now, deliver=sender.deliver)


def test_mime_shape_and_headers(sqlite_ctx: AppContext) -> None:
    with Session(sqlite_ctx.engine) as session:
        student, _ = add_student(session, sqlite_ctx.box)
        credential = Credential(student_id=student.id or 0, state="requested", policy="standalone",
                                valid_until=datetime(2027, 3, 31).date())
        data = ActivationData("ACDE-FGHJ-KMNP", "MLEG1:x:y", sqlite_ctx.clock.now() + timedelta(days=30))
        message = activation_email(sqlite_ctx.catalog, student=student, credential=credential, data=data,
                                   university="U", language="en", contact=sqlite_ctx.contact)
    email = build_email(message, sender="a@u.test", recipient="s@u.test", message_id="<1@u.test>",
                        date=sqlite_ctx.clock.now(), reply_to="help@u.test")
    parsed = parse(email.as_bytes())
    assert part_types(parsed) == [
        "multipart/mixed",
        "  multipart/alternative",
        "    text/plain",
        "    multipart/related",
        "      text/html",
        "      image/png",
        "  image/png",
    ]
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Reply-To"] == "help@u.test"
    assert parsed["Date"] == "Mon, 05 Oct 2026 09:00:00 +0000"
    inline = parsed.get_payload()[0].get_payload()[1].get_payload()[1]  # type: ignore[index]
    assert inline["Content-ID"] == "<qr-activation>"
    assert inline.get_content_disposition() == "inline"
    html = parsed.get_body(("html",))
    assert html is not None and 'src="cid:qr-activation"' in html.get_content()
    text = parsed.get_body(("plain",))
    assert text is not None and "ACDE-FGHJ-KMNP" in text.get_content() and "04.11.2026" in text.get_content()
    # The QR's content as text too, on its own line, for a student who cannot scan it (a phone
    # cannot scan its own screen): labelled, in both languages and both parts.
    assert "MLEG1:x:y" in text.get_content().splitlines()
    assert "If you cannot scan it, type its text by hand:" in text.get_content()
    assert "Jeśli nie możesz go zeskanować, wpisz ręcznie jego treść:" in text.get_content()
    assert html.get_content().count("MLEG1:x:y</code>") == 2
    assert parsed.get_payload()[1].get_filename() == "mlegitymacja-qr.png"  # type: ignore[index]


def test_reply_headers_thread_the_answer() -> None:
    message = OutgoingMessage(text="Odpowiedź", subject="Re: Pytanie [MLEG-7]", auto_submitted="auto-replied",
                              in_reply_to="<q2@student.test>", references=["<q1@student.test>"])
    email = build_email(message, sender="a@u.test", recipient="s@u.test", message_id="<a@u.test>",
                        date=datetime(2026, 10, 5, 9, 0).astimezone())
    parsed = parse(email.as_bytes())
    assert parsed["In-Reply-To"] == "<q2@student.test>"
    assert parsed["References"] == "<q1@student.test> <q2@student.test>"
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["X-Auto-Response-Suppress"] == "All"
    assert part_types(parsed) == ["text/plain"]


async def test_activation_email_read_back_over_imap_with_decodable_qr(
    tmp_path: Path, sqlite_url: str, clock: FixedClock, smtp_server: SmtpRelay, dovecot: DovecotServer,
    mailbox_user: str,
) -> None:
    ctx = mail_ctx(tmp_path, sqlite_url, clock, **smtp_settings(smtp_server))
    data, row_id = apply_for(ctx, mailbox_user)

    assert await drain(ctx) == 1

    [raw] = dovecot.fetch_all(mailbox_user)  # over IMAP, as the student's client reads it
    email = parse(raw)
    row = outbox_row(ctx, row_id)
    assert row.status == OutboxStatus.SENT and row.body is None
    assert email["Message-ID"] == row.external_id
    assert email["Message-ID"].endswith("@example.edu.pl>")
    assert email["From"] == "mlegitymacja@uni.example.test"
    assert email["To"] == mailbox_user
    text = email.get_body(("plain",))
    assert text is not None and data.code in text.get_content()
    images = [p for p in email.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 2
    for image in images:
        [decoded] = zxingcpp.read_barcodes(PIL.Image.open(io.BytesIO(image.get_payload(decode=True))))
        assert decoded.text == data.qr_payload


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_tls_and_auth(
    tmp_path: Path, sqlite_url: str, clock: FixedClock, smtp_server_factory: SmtpServerFactory,
    dovecot: DovecotServer, mailbox_user: str, security: str,
) -> None:
    server = smtp_server_factory(security=security, auth=("mleg", "pw"))  # type: ignore[arg-type]
    ctx = mail_ctx(tmp_path, sqlite_url, clock, **smtp_settings(
        server, username="mleg", password="pw", ca_file=str(server.ca_cert_path)))
    apply_for(ctx, mailbox_user)

    assert await drain(ctx) == 1
    [received] = server.messages
    assert received.secure and received.login == "mleg"


async def test_temporary_failure_is_retried_with_the_same_message_id(
    tmp_path: Path, sqlite_url: str, clock: FixedClock, smtp_server: SmtpRelay, mailbox_user: str,
) -> None:
    ctx = mail_ctx(tmp_path, sqlite_url, clock, **smtp_settings(smtp_server))
    _, row_id = apply_for(ctx, mailbox_user)
    smtp_server.fail_next(1, code=451)

    assert await drain(ctx) == 0
    row = outbox_row(ctx, row_id)
    assert row.status == OutboxStatus.PENDING and "451" in (row.last_error or "")
    assert row.next_attempt_at > clock.now()
    assert await drain(ctx) == 0  # not due yet: backoff

    clock.advance(minutes=1)
    assert await drain(ctx) == 1
    assert outbox_row(ctx, row_id).status == OutboxStatus.SENT
    [received] = smtp_server.messages
    assert outbox_row(ctx, row_id).external_id in received.data.decode()


async def test_smtp_down_then_back(
    tmp_path: Path, sqlite_url: str, clock: FixedClock, smtp_server: SmtpRelay, mailbox_user: str,
) -> None:
    ctx = mail_ctx(tmp_path, sqlite_url, clock, **smtp_settings(smtp_server, timeout_seconds=3))
    _, row_id = apply_for(ctx, mailbox_user)
    smtp_server.stop()

    assert await drain(ctx) == 0
    row = outbox_row(ctx, row_id)
    assert row.status == OutboxStatus.PENDING and row.last_error

    smtp_server.start()
    clock.advance(minutes=1)
    assert await drain(ctx) == 1
    assert len(smtp_server.messages) == 1


async def test_permanent_failure_is_recorded_not_retried(
    tmp_path: Path, sqlite_url: str, clock: FixedClock, smtp_server: SmtpRelay, mailbox_user: str,
) -> None:
    ctx = mail_ctx(tmp_path, sqlite_url, clock, **smtp_settings(smtp_server))
    _, row_id = apply_for(ctx, mailbox_user)
    smtp_server.fail_next(1, code=550, stage="rcpt", message="mailbox unavailable")

    assert await drain(ctx) == 0
    row = outbox_row(ctx, row_id)
    assert row.status == OutboxStatus.FAILED
    assert "550" in (row.last_error or "") and "mailbox unavailable" in (row.last_error or "")
    assert row.body is None
    clock.advance(hours=2)
    assert await drain(ctx) == 0
    assert smtp_server.messages == []


async def test_resend_after_crash_carries_the_same_message_id(
    tmp_path: Path, sqlite_url: str, clock: FixedClock, smtp_server: SmtpRelay, mailbox_user: str,
) -> None:
    ctx = mail_ctx(tmp_path, sqlite_url, clock, **smtp_settings(smtp_server))
    _, row_id = apply_for(ctx, mailbox_user)
    row = outbox_row(ctx, row_id)
    message = outbox.open_body(ctx.box, row)
    channel = SmtpChannel(ctx.settings, ctx.clock)

    first = await channel.deliver(row, message)
    second = await channel.deliver(row, message)  # as if the process died before recording "sent"

    assert first.ok and second.ok and first.external_id == second.external_id
    ids = {parse(m.data)["Message-ID"] for m in smtp_server.messages}
    assert ids == {first.external_id}


async def test_maildir_fallback_without_smtp(sqlite_ctx: AppContext) -> None:
    _, row_id = apply_for(sqlite_ctx, "anna@student.example.edu.pl")
    channel = make_email_channel(sqlite_ctx)
    assert isinstance(channel, MaildirChannel)

    assert await drain(sqlite_ctx) == 1

    row = outbox_row(sqlite_ctx, row_id)
    path = Path(row.external_id or "")
    assert path.is_file() and path.parent  # noqa: ASYNC240 == sqlite_ctx.settings.maildir_path / "new"
    [stored] = list(mailbox.Maildir(sqlite_ctx.settings.maildir_path, create=False))
    assert stored["To"] == "anna@student.example.edu.pl"
    # A redelivery of the same row (crash before "sent" was recorded) writes no second file.
    again = await channel.deliver(row, OutgoingMessage(text="x", subject="y"))
    assert again.external_id == str(path)
    assert len(list(mailbox.Maildir(sqlite_ctx.settings.maildir_path, create=False))) == 1


def test_message_ids_are_stable_per_installation_and_differ_between_installations() -> None:
    """A resend keeps its Message-ID; another installation (its own secret) never repeats it.

    A plain hash of the outbox key gave two databases the same Message-ID for different mails
    (`binding:1` exists in both), and mail clients drop what looks like a duplicate.
    """
    production, staging = SecretBox(b"p" * 32), SecretBox(b"s" * 32)
    first = email_message_id(production, "binding:1", "uni.example.test")
    assert first == email_message_id(production, "binding:1", "uni.example.test")
    assert first != email_message_id(staging, "binding:1", "uni.example.test")
    assert first != email_message_id(production, "binding:2", "uni.example.test")
    assert first.endswith(".mleg@uni.example.test>") and "binding" not in first
