"""`mleg threads`: the help desk's support threads (zgłoszenia): list, show, claim, reply, close.

Also shows what staff must see besides threads: quarantined inbound mail and e-mails that
failed permanently.
"""

from __future__ import annotations

import getpass
import json
import sys
from enum import StrEnum
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from sqlmodel import Session, col, select

from core.app.errors import ConflictError
from core.cli.common import build_context, emit_json, friendly_errors, print_table
from core.security.control_chars import strip_controls
from core.storage.db import unit_of_work
from core.storage.models import InboundMail, OutboxMessage, OutboxStatus, SupportThread
from core.support import answers
from core.support import threads as support

app = typer.Typer(help="Support threads from the chat and the support mailbox.", no_args_is_help=True)


class ThreadFilter(StrEnum):
    """`--status`: open (all but closed), all, or one status."""

    OPEN = "open"
    ALL = "all"
    ESCALATED = "escalated"
    CLAIMED = "claimed"
    ANSWERED = "answered"
    CLOSED = "closed"


def _sender(verified: bool | None) -> str:
    """How an e-mail sender's proof reads: "verified", "UNVERIFIED" (From not proven), or "" (not e-mail)."""
    return "" if verified is None else ("verified" if verified else "UNVERIFIED")


def _public(thread: SupportThread) -> dict[str, Any]:
    return {
        "id": thread.id, "tag": support.thread_tag(thread.id or 0), "status": thread.status,
        "channel": thread.channel, "account": thread.account_id, "student_id": thread.student_id,
        "subject": thread.subject, "language": thread.language, "claimed_by": thread.claimed_by,
        "created_at": thread.created_at, "updated_at": thread.updated_at, "closed_at": thread.closed_at,
        # E-mail: whether the receiving server proved the From address (None: not e-mail, or from before).
        "sender_verified": thread.sender_verified,
        # Why the escalation was not posted to the staff room (a flood cap), or None.
        "escalation_held": thread.escalation_held,
    }


def _echo(text: str) -> None:
    """Print stored text: what strangers wrote never steers the operator's terminal (ESC
    sequences), even in rows stored before inbound text was cleaned at parse time."""
    typer.echo(strip_controls(text))


def _problems(session: Session) -> dict[str, int]:
    quarantined = session.exec(
        select(sa.func.count()).select_from(InboundMail).where(InboundMail.status == "quarantined")).one()
    failed = session.exec(select(sa.func.count()).select_from(OutboxMessage).where(
        OutboxMessage.status == OutboxStatus.FAILED)).one()
    return {"quarantined_mail": int(quarantined), "failed_deliveries": int(failed)}


@app.command("list")
@friendly_errors
def list_command(
    status: Annotated[ThreadFilter, typer.Option(
        help="open (all but closed), all, or one of escalated, claimed, answered, closed.")] = ThreadFilter.OPEN,
    limit: Annotated[int, typer.Option(min=0, help="At most this many, most recently active first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List support threads, most recently active first."""
    ctx = build_context()
    with Session(ctx.engine) as session:
        chosen = None if status is ThreadFilter.ALL else status.value
        threads = support.list_threads(session, status=chosen, limit=limit)
        problems = _problems(session)
    if as_json:
        emit_json({"threads": [_public(t) for t in threads], **problems})
        return
    print_table(["id", "status", "channel", "account", "sender", "subject", "updated"],
                [(t.id, f"{t.status} (held)" if t.escalation_held else t.status, t.channel,
                  strip_controls(t.account_id or ""), _sender(t.sender_verified),
                  strip_controls(t.subject or "")[:50], f"{t.updated_at:%Y-%m-%d %H:%M}")
                 for t in threads])
    held = [t for t in threads if t.escalation_held]
    if held:
        typer.echo(f"\nheld: {len(held)} escalation(s) not posted to the staff room (flood caps, "
                   "MLEG_IMAP__ESCALATIONS_PER_SENDER_PER_DAY / _PER_DOMAIN_PER_DAY): "
                   + ", ".join(f"#{t.id}" for t in held[:20]) + ("..." if len(held) > 20 else ""))
    if any(t.sender_verified is False for t in threads):
        typer.echo("\nUNVERIFIED: the mail server did not prove the From address of these threads' mail; "
                   "anyone can write it. Confirm with the student before acting on them.")
    if problems["quarantined_mail"] or problems["failed_deliveries"]:
        typer.echo(f"\nattention: {problems['quarantined_mail']} quarantined inbound mail, "
                   f"{problems['failed_deliveries']} failed deliveries (see `mleg status`)")


@app.command("show")
@friendly_errors
def show_command(
    thread_id: Annotated[int, typer.Argument(help="Thread number (the N in [MLEG-N]).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One thread: its messages, the delivery state of every answer, and its history (claims,
    take-overs, answers the student's chat refused and where they went instead)."""
    ctx = build_context()
    with Session(ctx.engine) as session:
        thread = support.get_thread(session, thread_id)
        messages = support.thread_messages(session, thread_id)
        deliveries = session.exec(select(OutboxMessage).where(OutboxMessage.thread_id == thread_id)
                                  .order_by(col(OutboxMessage.id))).all()
        history = support.thread_history(session, thread_id)
    data = _public(thread)
    data["messages"] = [{"id": m.id, "at": m.created_at, "direction": m.direction, "author": m.author,
                         "text": m.body, "email_message_id": m.email_message_id,
                         "sender_verified": m.sender_verified} for m in messages]
    data["deliveries"] = [{"id": d.id, "channel": d.channel, "recipient": d.recipient, "kind": d.kind,
                           "status": d.status, "attempts": d.attempts, "error": d.last_error,
                           "external_id": d.external_id} for d in deliveries]
    data["history"] = [{"at": e.at, "actor": e.actor, "action": e.action,
                        "detail": json.loads(e.detail) if e.detail else {}} for e in history]
    if as_json:
        emit_json(data)
        return
    for key in ("tag", "status", "channel", "account", "subject", "language", "claimed_by", "created_at"):
        _echo(f"{key:12} {'' if data[key] is None else data[key]}")
    if thread.sender_verified is False:
        _echo(f"{'sender':12} UNVERIFIED: the mail server did not prove that {thread.account_id} wrote "
              "this; confirm with the student before acting on it")
    elif thread.sender_verified:
        _echo(f"{'sender':12} verified by the receiving mail server")
    if thread.escalation_held:
        _echo(f"{'held':12} not posted to the staff room: {thread.escalation_held}")
    for message in data["messages"]:
        arrow = {"in": "<-", "note": "##"}.get(message["direction"], "->")
        mark = " [UNVERIFIED sender]" if message["sender_verified"] is False else ""
        _echo(f"\n{arrow} {message['at']:%Y-%m-%d %H:%M} {message['author']}{mark}\n{message['text']}")
    if data["deliveries"]:
        _echo("\ndeliveries:")
        for d in data["deliveries"]:
            _echo(f"  #{d['id']} {d['kind']} to {d['recipient']}: {d['status']}"
                       + (f" ({d['error']})" if d["error"] else ""))
    if data["history"]:
        _echo("\nhistory:")
        for event in data["history"]:
            detail = ", ".join(f"{k}={v}" for k, v in event["detail"].items())
            _echo(f"  {event['at']:%Y-%m-%d %H:%M} {event['action']} by {event['actor']}"
                       + (f" ({detail})" if detail else ""))


@app.command("claim")
@friendly_errors
def claim_command(
    thread_id: Annotated[int, typer.Argument(help="Thread number.")],
    by: Annotated[str | None, typer.Option(help="Who takes it (for the audit trail).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Take over a thread a colleague holds.")] = False,
) -> None:
    """Take a thread, so colleagues see who answers it (as /claim in the staff room)."""
    staff = by or getpass.getuser()
    ctx = build_context()
    with unit_of_work(ctx.engine) as session:
        previous = support.get_thread(session, thread_id).claimed_by
        try:
            support.claim_thread(ctx, session, thread_id, staff=staff, force=force)
        except support.ThreadClaimed as exc:
            raise ConflictError(f"{exc}; add --force to take it over") from exc
    taken = f" (taken over from {previous})" if previous and previous != staff else ""
    typer.echo(f"thread {thread_id} claimed by {staff}{taken}")


@app.command("reply")
@friendly_errors
def reply_command(
    thread_id: Annotated[int, typer.Argument(help="Thread number.")],
    text: Annotated[str | None, typer.Option(help="The answer; read from stdin when omitted.")] = None,
    by: Annotated[str | None, typer.Option(help="Who answers (for the audit trail).")] = None,
) -> None:
    """Answer the student on the channel they used (an e-mail reply threads in their mail client)."""
    body = text if text is not None else sys.stdin.read()
    if not body.strip():
        raise typer.BadParameter("the answer is empty")
    ctx = build_context()
    with unit_of_work(ctx.engine) as session:
        message = answers.staff_reply(ctx, session, thread_id, text=body.strip(), staff=by or getpass.getuser())
        message_id = message.id
    typer.echo(f"answer queued for thread {thread_id} (message {message_id}); `mleg serve` sends it")


@app.command("close")
@friendly_errors
def close_command(
    thread_id: Annotated[int, typer.Argument(help="Thread number.")],
    by: Annotated[str | None, typer.Option(help="Who closes it (for the audit trail).")] = None,
) -> None:
    """Close a thread; a new message from the student reopens it."""
    ctx = build_context()
    with unit_of_work(ctx.engine) as session:
        support.close_thread(ctx, session, thread_id, staff=by or getpass.getuser())
    typer.echo(f"thread {thread_id} closed")
