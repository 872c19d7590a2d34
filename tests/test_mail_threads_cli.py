"""`mleg threads list|show|reply|close` on an e-mail thread: the staff reply threads in the student's client."""

from __future__ import annotations

import json
import mailbox
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from core.app.context import AppContext
from core.cli import app
from core.messaging import sending
from core.students.pesel import mask_pesel
from core.support.mailbox_rules import InboundFacts
from mail.channel import MaildirChannel
from tests.cli_helpers import invoke
from tests.factories import student_pesel
from tests.support.mail_rules import handle


async def test_list_show_reply_close(sqlite_ctx: AppContext, runner: CliRunner) -> None:
    facts = InboundFacts(sender="ola@example.org", subject="Pytanie o coś innego", text="Czy mogę przyjść osobiście?",
                         message_id="<q1@example.org>", references=["<q0@example.org>"])
    outcome = handle(sqlite_ctx, facts)
    assert outcome.reason == "escalated to staff"

    listed = json.loads(invoke(runner, "threads", "list", "--json"))
    [thread] = listed["threads"]
    assert thread["status"] == "escalated" and thread["account"] == "ola@example.org"
    assert listed["quarantined_mail"] == 0
    shown = json.loads(invoke(runner, "threads", "show", str(thread["id"]), "--json"))
    assert shown["messages"][0]["text"] == "Czy mogę przyjść osobiście?"
    assert shown["deliveries"][0]["kind"] == "mail-notice"  # the "we got it" notice

    assert "queued" in invoke(runner, "threads", "reply", str(thread["id"]), "--text", "Tak, pokój 12.",
                              "--by", "kasia")
    sqlite_ctx.clock.set(datetime.now(UTC) + timedelta(minutes=1))  # the CLI ran on the real clock
    channel = MaildirChannel(sqlite_ctx.settings, sqlite_ctx.clock)
    assert await sending.drain_once(sqlite_ctx.engine, sqlite_ctx.box, channel="email", now=sqlite_ctx.clock.now,
                                   deliver=channel.deliver) == 2
    maildir = mailbox.Maildir(Path(sqlite_ctx.settings.maildir_path), create=False)
    reply = next(m for m in maildir if "Tak, pokój 12." in m.get_payload(decode=True).decode())  # type: ignore[union-attr]
    assert reply["In-Reply-To"] == "<q1@example.org>"
    assert "<q1@example.org>" in reply["References"]
    assert f"[MLEG-{thread['id']}]" in reply["Subject"]
    assert reply["Auto-Submitted"] is None  # a person's answer

    shown = json.loads(invoke(runner, "threads", "show", str(thread["id"]), "--json"))
    assert shown["status"] == "answered"
    assert shown["messages"][-1]["email_message_id"] == reply["Message-ID"]  # so the next reply threads
    assert all(d["status"] == "sent" for d in shown["deliveries"])
    invoke(runner, "threads", "close", str(thread["id"]))
    assert json.loads(invoke(runner, "threads", "list", "--json"))["threads"] == []
    assert "closed" in invoke(runner, "threads", "list", "--status", "all")
    again = runner.invoke(app, ["threads", "close", str(thread["id"])])
    assert again.exit_code == 2 and "already closed" in again.output


def test_list_and_show_mask_a_pesel_and_code_from_the_mail(sqlite_ctx: AppContext, runner: CliRunner) -> None:
    pesel = student_pesel(43)
    facts = InboundFacts(sender="ola@example.org", subject=f"Problem PESEL {pesel}",
                         text=f"mój PESEL {pesel}. Kod aktywacyjny K7MN-P2QR-TXWZ nie działa",
                         message_id="<pesel-cli@example.org>")
    handle(sqlite_ctx, facts)

    listed = invoke(runner, "threads", "list")
    [thread] = json.loads(invoke(runner, "threads", "list", "--json"))["threads"]
    shown = invoke(runner, "threads", "show", str(thread["id"])) + invoke(runner, "threads", "show",
                                                                        str(thread["id"]), "--json")
    for output in (listed, shown):
        assert pesel not in output and "K7MN" not in output
    assert mask_pesel(pesel) in shown and "****-****-****" in shown


def test_claim_from_the_cli_refuses_a_silent_take_over(sqlite_ctx: AppContext, runner: CliRunner) -> None:
    """A help desk working from the terminal claims threads too, under the staff room's rule."""
    facts = InboundFacts(sender="ola@example.org", subject="Pytanie", text="Czy mogę przyjść osobiście?",
                         message_id="<c1@example.org>", references=[])
    handle(sqlite_ctx, facts)
    [thread] = json.loads(invoke(runner, "threads", "list", "--json"))["threads"]
    number = str(thread["id"])
    assert "claimed by kasia" in invoke(runner, "threads", "claim", number, "--by", "kasia")
    assert "claimed by kasia" in invoke(runner, "threads", "claim", number, "--by", "kasia")  # one's own again
    refused = runner.invoke(app, ["threads", "claim", number, "--by", "tomek"])
    assert refused.exit_code == 2 and "kasia" in refused.output and "--force" in refused.output
    assert json.loads(invoke(runner, "threads", "show", number, "--json"))["claimed_by"] == "kasia"
    assert "taken over from kasia" in invoke(runner, "threads", "claim", number, "--by", "tomek", "--force")
    shown = json.loads(invoke(runner, "threads", "show", number, "--json"))
    assert shown["claimed_by"] == "tomek"
    assert [e["action"] for e in shown["history"]][-2:] == ["thread.claimed", "thread.taken_over"]
