"""`mleg chat`: the conversation engine in the terminal, on the same rules as Telegram."""

from __future__ import annotations

import asyncio
import csv
import getpass
import logging
from collections.abc import Callable
from typing import Annotated

import typer
from sqlmodel import Session, col, select

from core.app.config_files import find
from core.app.context import AppContext
from core.app.plugins import load_channels
from core.cli.common import build_context, friendly_errors
from core.conversation import ConversationService, Event, Reply
from core.messaging import outbox, sending
from core.storage.models import OutboxMessage, OutboxStatus, Student

log = logging.getLogger(__name__)
CHANNEL = "console"


def _demo_hint(ctx: AppContext) -> str:
    """In demo mode, a few generated students a person can try to be."""
    path = find(ctx.settings.config_layers(), "demo-register.csv")
    if ctx.settings.mode != "demo" or not path.is_file():
        return ""
    with path.open(encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["pesel"]][:40]
    # Only people the database holds: with another register imported they would not be recognised.
    with Session(ctx.engine) as session:
        known = set(session.exec(select(Student.pesel_hash).where(
            col(Student.pesel_hash).in_([ctx.box.pesel_hash(r["pesel"]) for r in rows]))).all())
    rows = [r for r in rows if ctx.box.pesel_hash(r["pesel"]) in known]
    if not rows:
        return ""
    picks = {
        "active first-cycle student": next(
            (r for r in rows if r["status"] == "active" and r["study_level"] == "first_cycle"), None),
        "doctoral student (not eligible)": next((r for r in rows if r["study_level"] == "doctoral"), None),
        "graduated student": next((r for r in rows if r["status"] == "graduated"), None),
    }
    lines = ["Demo register (generated people). Try being:"]
    for label, row in picks.items():
        if row is None:
            continue
        lines.append(f"  {label}: PESEL {row['pesel']}, album {row['album']}, ELS {row['els_number']}")
    return "\n".join(lines)


class ConsoleChat:
    """Reads lines, turns them into events, prints replies, delivers queued mail and staff answers."""

    def __init__(self, ctx: AppContext, account: str, write: Callable[[str], None] = typer.echo) -> None:
        self.ctx = ctx
        self.account = account
        self.write = write
        self.service = ConversationService(ctx)
        self.buttons: list[tuple[str, str]] = []
        self.channels = load_channels(ctx, only={"email"})

    def event_for(self, line: str) -> Event:
        stripped = line.strip()
        if stripped.isdigit() and self.buttons and 1 <= int(stripped) <= len(self.buttons) and len(stripped) <= 2:
            data = self.buttons[int(stripped) - 1][1]
            return Event(kind="button", channel=CHANNEL, account_id=self.account, text=data)
        return Event.text_message(CHANNEL, self.account, line)

    def show(self, replies: list[Reply]) -> None:
        self.buttons = []
        for reply in replies:
            self.write("\n" + reply.text)
            for row in reply.buttons:
                labels = []
                for button in row:
                    self.buttons.append((button.label, button.data))
                    labels.append(f"[{len(self.buttons)}] {button.label}")
                self.write("   " + "   ".join(labels))

    def _language(self) -> str:
        """The conversation's language for an apology; the default when even that cannot be read."""
        try:
            return self.service.state_of(CHANNEL, self.account).language or self.ctx.settings.default_language
        except Exception:
            return self.ctx.settings.default_language

    def turn(self, line: str) -> None:
        try:
            replies = self.service.handle(self.event_for(line))
        except Exception:
            log.exception("console turn failed")
            replies = [Reply(self.ctx.catalog.text(self._language(), "error_technical"))]
        self.show(replies)
        asyncio.run(self.deliver())

    async def deliver(self) -> None:
        """Send what the turn queued: e-mail through the configured channel, staff answers here."""
        sender = self.channels.get("email")
        if sender is not None:
            async def deliver_email(row: OutboxMessage, message: outbox.OutgoingMessage) -> sending.DeliveryResult:
                result = await sender.deliver(row, message)
                if result.ok:
                    self.write(f"   (e-mail \"{message.subject}\" delivered: {result.external_id})")
                else:
                    # The chat may just have said "I sent a code": the operator must see it did not go.
                    self.write(f"   (e-mail \"{message.subject}\" NOT delivered: {result.error}; "
                               "it stays in the outbox and is tried again)")
                return result

            await sending.drain_once(self.ctx.engine, self.ctx.box, channel="email", now=self.ctx.clock.now,
                                    deliver=deliver_email)
        self._deliver_console_rows()

    def _deliver_console_rows(self) -> None:
        with Session(self.ctx.engine) as session:
            rows = session.exec(select(OutboxMessage).where(
                OutboxMessage.channel == CHANNEL, OutboxMessage.recipient == self.account,
                OutboxMessage.status == OutboxStatus.PENDING,
            ).order_by(col(OutboxMessage.id))).all()
            for row in rows:
                message = outbox.open_body(self.ctx.box, row)
                self.write("\n" + message.text)
                sending.mark_sent(row, self.ctx.clock.now())
                session.add(row)
            session.commit()


@friendly_errors
def chat_command(
    account: Annotated[str | None, typer.Option(help="Who you are in this chat (default: your login).")] = None,
) -> None:
    """Talk to the conversation engine in the terminal: the same journey as in Telegram.

    Type a number to press a button, /commands as in Telegram, Ctrl-D to leave.
    """
    ctx = build_context()
    logging.getLogger().setLevel(logging.WARNING)
    chat = ConsoleChat(ctx, account or getpass.getuser())
    hint = _demo_hint(ctx)
    if hint:
        typer.echo(hint)
    if "email" not in chat.channels:
        typer.echo("(no e-mail channel available: e-mails stay queued in the outbox)")
    elif not ctx.settings.smtp.host:
        typer.echo(f"E-mail goes to the local Maildir {ctx.settings.maildir_path} (no SMTP configured).")
    chat.turn("/start")
    while True:
        try:
            line = input("\n> ")
        except (EOFError, KeyboardInterrupt):
            typer.echo("")
            return
        if line.strip() in ("/quit", "/exit"):
            return
        chat.turn(line)
