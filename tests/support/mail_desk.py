"""The support mailbox on a real Dovecot with its reader and the SMTP relay answers go out through."""

from __future__ import annotations

import imaplib
import itertools
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from sqlmodel import Session, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.messaging import sending
from core.storage.models import InboundMail, OutboxMessage, SupportThread
from mail.channel import SmtpChannel
from mail.frontend import MailFrontend
from mail.stored import stored_raw
from tests.mail_samples.kit import mail_ctx, parse, sample
from tests.servers.dovecot import DovecotServer
from tests.servers.smtp_relay import SmtpRelay

_n = itertools.count(1)
# The authserv-id our (pretend) receiving server writes into Authentication-Results.
AUTHSERV_ID = "mx.example.test"


def mail_number() -> str:
    """A number no other sample mail of this session has (samples put it in their Message-ID)."""
    return str(next(_n))


@dataclass
class Desk:
    """The support mailbox, its reader, and the SMTP relay answers go out through."""

    ctx: AppContext
    dovecot: DovecotServer
    smtp: SmtpRelay
    address: str
    frontend: MailFrontend

    def deliver(self, name: str, *, mail_from: str = "student@example.org", proven: bool = False,
                **values: str) -> bytes:
        """A sample mail into the support mailbox; `proven`: as our receiving server marks a mail
        whose DKIM signature and DMARC check passed for its From domain (core.support.mail_sender)."""
        values.setdefault("support", self.address)
        values.setdefault("n", mail_number())
        raw = sample(name, **values)
        if proven:
            domain = values["sender"].rpartition("@")[2]
            raw = (f"Authentication-Results: {AUTHSERV_ID};\r\n\tdkim=pass header.d={domain} header.s=s1;\r\n"
                   f"\tdmarc=pass (p=reject) header.from={domain}\r\n").encode() + raw
        self.dovecot.deliver(self.address, raw, mail_from=mail_from)
        return raw

    def deliver_raw(self, raw: bytes, mail_from: str = "student@example.org") -> None:
        self.dovecot.deliver(self.address, raw, mail_from=mail_from)

    async def send_answers(self) -> list[EmailMessage]:
        channel = SmtpChannel(self.ctx.settings, self.ctx.clock)
        await sending.drain_once(self.ctx.engine, self.ctx.box, channel="email", now=self.ctx.clock.now,
                                deliver=channel.deliver)
        return [parse(m.data) for m in self.smtp.messages]

    def rows(self) -> list[InboundMail]:
        with Session(self.ctx.engine) as session:
            return list(session.exec(select(InboundMail).order_by(InboundMail.id)).all())  # type: ignore[arg-type]

    def raw(self, row: InboundMail) -> bytes | None:
        assert row.id is not None
        with Session(self.ctx.engine) as session:
            return stored_raw(session, row.id)

    def threads(self) -> list[SupportThread]:
        with Session(self.ctx.engine) as session:
            return list(session.exec(select(SupportThread).order_by(SupportThread.id)).all())  # type: ignore[arg-type]

    def outbox(self, channel: str = "email") -> list[OutboxMessage]:
        with Session(self.ctx.engine) as session:
            return list(session.exec(select(OutboxMessage).where(OutboxMessage.channel == channel)).all())

    def unseen(self) -> list[bytes]:
        with imaplib.IMAP4(self.dovecot.host, self.dovecot.imap_port, timeout=10) as imap:
            imap.login(self.address, self.dovecot.password)
            imap.select("INBOX", readonly=True)
            _, data = imap.uid("SEARCH", "UNSEEN")
            imap.logout()
            return data[0].split() if data and data[0] else []


def open_desk(tmp_path: Path, sqlite_url: str, clock: FixedClock, dovecot: DovecotServer,
              smtp_server: SmtpRelay) -> Desk:
    """A fresh support mailbox on `dovecot`; the caller disposes of `desk.ctx.engine`."""
    address = dovecot.new_user(prefix="support")
    ctx = mail_ctx(
        tmp_path, sqlite_url, clock,
        imap={"host": dovecot.host, "port": dovecot.imap_port, "security": "none", "username": address,
              "password": dovecot.password, "idle_timeout_seconds": 2, "poll_interval_seconds": 0.5,
              "authserv_id": AUTHSERV_ID},
        smtp={"host": smtp_server.host, "port": smtp_server.port, "security": "none", "sender": address},
        university={"help_desk_email": address},
    )
    return Desk(ctx, dovecot, smtp_server, address, MailFrontend(ctx))
