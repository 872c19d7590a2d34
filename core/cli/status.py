"""`mleg status`: what is configured, what the database holds, and how the servers are doing.

`--json` prints the same for a monitoring check: above all the failing deliveries, by channel
and kind (core.messaging.delivery_failures).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import typer
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from core.app.health import read_health
from core.app.settings import Settings
from core.cli.common import build_context, friendly_errors
from core.jobs.leader import LIFECYCLE_LOCK, TELEGRAM_POLLING_LOCK, TELEGRAM_UPDATES_LOCK, advisory_key
from core.jobs.retention import rules as retention_rules
from core.jobs.runner import JOBS
from core.messaging.delivery_failures import FailingDeliveries, failing, given_up
from core.security.redact import redact_personal
from core.storage import update_store
from core.storage.db import alembic_config, current_revision
from core.storage.models import (
    Credential,
    InboundMail,
    JobRun,
    OutboxMessage,
    OutboxStatus,
    Student,
    SupportThread,
    WebhookState,
)

LABEL = 16
# Given-up deliveries are shown for this long: they are never retried, and old ones are history.
GIVEN_UP_SHOWN = timedelta(days=7)


def _line(label: str, value: str) -> None:
    typer.echo(f"{label:<{LABEL}}{value}")


def _when(moment: datetime, now: datetime) -> str:
    """`2026-10-05 09:00 UTC (3 h ago)`: the instant, and how far it is from now."""
    delta = now - moment
    seconds = abs(delta.total_seconds())
    if seconds < 90:
        span = f"{seconds:.0f} s"
    elif seconds < 90 * 60:
        span = f"{seconds / 60:.0f} min"
    elif seconds < 48 * 3600:
        span = f"{seconds / 3600:.0f} h"
    else:
        span = f"{seconds / 86400:.0f} days"
    relative = f"{span} ago" if delta >= timedelta(0) else f"in {span}"
    return f"{moment:%Y-%m-%d %H:%M} UTC ({relative})"


def _schema(engine: Engine) -> str:
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    current = current_revision(engine)
    if current is None:
        return "not created (run `mleg db upgrade`)"
    if current == head:
        return f"{current} (head)"
    return f"{current} (head is {head}: run `mleg db upgrade`)"


def _lock_holder(session: Session, name: str, now: datetime, what: str) -> str:
    """Who holds a session-level advisory lock (core.jobs.leader), as PostgreSQL's pg_locks tells it.

    A bigint key shows in pg_locks split in two: its high half in classid, its low half in objid.
    """
    if session.get_bind().dialect.name != "postgresql":
        return f"not used on SQLite (one process: its `mleg serve` {what})"
    key = advisory_key(name) & 0xFFFF_FFFF_FFFF_FFFF
    holder = session.execute(sa.text(
        "SELECT l.pid, a.client_addr, a.backend_start FROM pg_locks l "
        "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid::bigint = :high AND l.objid::bigint = :low"
    ), {"high": key >> 32, "low": key & 0xFFFF_FFFF}).first()
    if holder is None:
        return f"free: no server {what}"
    pid, address, since = holder
    where = f", {address}" if address else ""
    started = f", connected {_when(since, now)}" if since else ""
    return f"held by a server (database pid {pid}{where}{started})"


def _job_lines(session: Session, now: datetime) -> None:
    """The last run of each lifecycle job, from the ledger."""
    for name in JOBS:
        run = session.exec(
            select(JobRun).where(JobRun.name == name).order_by(col(JobRun.started_at).desc()).limit(1)
        ).first()
        if run is None:
            _line("job", f"{name}: never run")
            continue
        took = (f", took {(run.finished_at - run.started_at).total_seconds():.1f} s"
                if run.finished_at else ", not finished")
        detail = f": {run.detail[:160]}" if run.detail and run.detail != "{}" else ""
        _line("job", f"{name}: {'ok' if run.ok else 'FAILED'}, started {_when(run.started_at, now)}{took}{detail}")


def _outbox_lines(session: Session, now: datetime) -> None:
    """The oldest message still waiting to go, and rows whose sender died with them leased."""
    oldest = session.exec(
        select(OutboxMessage).where(OutboxMessage.status == OutboxStatus.PENDING)
        .order_by(col(OutboxMessage.created_at), col(OutboxMessage.id)).limit(1)
    ).first()
    if oldest is None:
        _line("oldest pending", "none")
    else:
        # An SMTP or Telegram error may quote an address or what the student typed.
        error = f": {redact_personal(oldest.last_error)[:160]}" if oldest.last_error else ""
        queued, due = _when(oldest.created_at, now), _when(oldest.next_attempt_at, now)
        _line("oldest pending", f"#{oldest.id} {oldest.channel} ({oldest.kind}), queued {queued}, "
                                f"attempts {oldest.attempts}, next attempt {due}{error}")
    sending = session.exec(
        select(OutboxMessage.lease_until).where(OutboxMessage.status == OutboxStatus.SENDING)).all()
    if sending:
        lapsed = sum(1 for lease in sending if lease is None or lease <= now)
        _line("outbox leases", f"{len(sending)} being sent, {lapsed} past their lease end "
                               "(a server stopped while sending them: due again)")


def _auth(s: Settings, auth: str) -> str:
    return f"xoauth2 via {s.mail_oauth.provider}" if auth == "xoauth2" else "password"


def _oauth_summary(s: Settings) -> str:
    """Which provider and identity the tokens come from; secrets only as set / not set."""
    o = s.mail_oauth
    parts = [f"provider {o.provider}"]
    if o.provider == "microsoft":
        parts += [f"tenant {o.tenant_id}", f"client id {o.client_id}",
                  "client secret ******" if o.client_secret else f"certificate {o.certificate_file}"]
    elif o.provider == "google":
        parts.append(f"service account file {o.service_account_file}")
    elif o.provider == "generic":
        parts += [f"token url {o.token_url}", f"client id {o.client_id}",
                  f"client secret {'******' if o.client_secret else 'not set'}"]
    if o.scopes:
        parts.append(f"scopes {' '.join(o.scopes)}")
    return ", ".join(parts)
def _failure_lines(session: Session, now: datetime) -> None:
    """Deliveries that failed and are retried, and those given up lately, by channel and kind."""
    groups = failing(session)
    if not groups:
        _line("failing", "none")
    for group in groups:
        _line("failing", f"{group.channel} ({group.kind}): {group.count} message(s) not sent, oldest queued "
                         f"{_when(group.oldest, now)}, last error: {group.last_error[:160]}")
    for group in given_up(session, since=now - GIVEN_UP_SHOWN):
        _line("given up", f"{group.channel} ({group.kind}): {group.count} in the last {GIVEN_UP_SHOWN.days} days, "
                          f"first {_when(group.oldest, now)}, last error: {group.last_error[:160]}")


def _status_json(session: Session, engine: Engine, now: datetime) -> dict[str, Any]:
    def groups(found: list[FailingDeliveries]) -> list[dict[str, object]]:
        return [group.as_json() for group in found]

    def counts(column: Any) -> dict[str, int]:
        rows = session.execute(sa.select(column, sa.func.count()).group_by(column)).all()
        return {str(name): int(number) for name, number in rows}

    oldest = session.exec(
        select(OutboxMessage).where(OutboxMessage.status == OutboxStatus.PENDING)
        .order_by(col(OutboxMessage.created_at), col(OutboxMessage.id)).limit(1)
    ).first()
    return {
        "now": now.isoformat(),
        "schema": current_revision(engine),
        "students": int(session.execute(sa.select(sa.func.count()).select_from(Student)).scalar_one()),
        "credentials": counts(col(Credential.state)),
        "outbox": counts(col(OutboxMessage.status)),
        "oldest_pending": None if oldest is None else {
            "id": oldest.id, "channel": oldest.channel, "kind": oldest.kind, "attempts": oldest.attempts,
            "queued": oldest.created_at.isoformat(), "next_attempt": oldest.next_attempt_at.isoformat()},
        "failing_deliveries": groups(failing(session)),
        "given_up_deliveries": groups(given_up(session, since=now - GIVEN_UP_SHOWN)),
        "given_up_since": (now - GIVEN_UP_SHOWN).isoformat(),
        "connections": {h.name: {"ok": h.ok, "since": h.since.isoformat(), "checked": h.checked_at.isoformat(),
                                 "detail": redact_personal(h.detail)[:200]} for h in read_health(session)},
    }


def _webhook_lines(session: Session, s: Settings, now: datetime) -> None:
    """Telegram's stored updates, and in webhook mode the webhook's health as the servers last saw it."""
    waiting = update_store.pending(session, channel="telegram")
    if waiting.count:
        oldest = _when(waiting.oldest_received_at, now) if waiting.oldest_received_at else "?"
        _line("stored updates", f"{waiting.count} not handled yet, the oldest (update {waiting.oldest_update_id}) "
                                f"received {oldest}")
    else:
        _line("stored updates", "none waiting to be handled")
    telegram = s.telegram
    if not telegram.webhook_url:
        return
    _line("webhook", f"{telegram.webhook_url} (served on {telegram.webhook_listen}:{telegram.webhook_port})")
    _line("updates lock", _lock_holder(session, TELEGRAM_UPDATES_LOCK, now, "handles the stored updates"))
    last = waiting.last_received_at
    _line("last update", f"received {_when(last, now)}" if last else "none received yet")
    state = session.get(WebhookState, "telegram")
    if state is None or state.set_at is None:
        _line("setWebhook", "not called yet (no `mleg serve` started in webhook mode)")
    elif state.set_error:
        _line("setWebhook", f"FAILED {_when(state.set_at, now)}: {redact_personal(state.set_error)[:160]}")
    else:
        _line("setWebhook", f"ok, {_when(state.set_at, now)} for {state.url}")
    if state is None or state.info_checked_at is None:
        _line("Telegram says", "not asked yet (getWebhookInfo, once a minute by the server handling updates)")
        return
    error = (f"last delivery error {_when(state.info_error_at, now)}: {redact_personal(state.info_error)[:160]}"
             if state.info_error and state.info_error_at else "no delivery error")
    _line("Telegram says", f"{error}; {state.info_pending or 0} update(s) waiting at Telegram "
                           f"(getWebhookInfo, {_when(state.info_checked_at, now)})")


@friendly_errors
def status_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object for a monitoring check: the "
                                 "outbox, and the failing and given-up deliveries by channel and kind."),
) -> None:
    """Show the configuration (secrets hidden), counts of students, credentials, outbox, and runtime health:
    schema revision, who holds the jobs and polling locks, the last job runs, the oldest pending message,
    failing deliveries by channel and kind, Telegram updates stored and not handled yet, and in webhook
    mode the webhook's health."""
    ctx = build_context()
    s = ctx.settings
    now = ctx.clock.now()
    if as_json:
        with Session(ctx.engine) as session:
            typer.echo(json.dumps(_status_json(session, ctx.engine, now), ensure_ascii=False, indent=2))
        return
    typer.echo(f"mode            {s.mode}")
    typer.echo(f"database        {ctx.engine.url.render_as_string()}")
    typer.echo(f"policy          {s.policy}")
    typer.echo(f"university      {s.university.name} ({', '.join(s.university.email_domains)})")
    typer.echo(f"telegram        {'configured' if s.telegram.token else 'not configured'}")
    smtp = f"{s.smtp.host}:{s.smtp.port} ({s.smtp.security}, {_auth(s, s.smtp.auth)})" if s.smtp.host else (
        f"not configured: e-mail goes to the local Maildir {s.maildir_path}")
    typer.echo(f"smtp            {smtp}")
    imap = (f"{s.imap.host}:{s.imap.port} {s.imap.mailbox} ({s.imap.security}, {_auth(s, s.imap.auth)})"
            if s.imap.host else "not configured")
    typer.echo(f"support mailbox {imap}")
    if "xoauth2" in {s.smtp.auth if s.smtp.host else "", s.imap.auth if s.imap.host else ""}:
        _line("mail oauth2", _oauth_summary(s))
    for what, kept in retention_rules(s):  # how long each kind of personal data is kept
        _line("retention", f"{what}: {kept}")
    if s.imap.host:
        _line("sender proof", f"Authentication-Results of {s.imap.authserv_id} (DMARC or aligned DKIM pass)"
              if s.imap.authserv_id else "off: MLEG_IMAP__AUTHSERV_ID is not set, so no e-mail sender is proven "
              "and no mail joins an earlier ticket")
    _line("schema", _schema(ctx.engine))
    with Session(ctx.engine) as session:
        def count(query: sa.Select[tuple[int]]) -> int:
            return int(session.exec(query).one())  # type: ignore[call-overload]

        students = count(select(sa.func.count()).select_from(Student))
        typer.echo(f"students        {students}")
        for state, number in session.exec(
            select(Credential.state, sa.func.count()).group_by(col(Credential.state))
        ).all():
            typer.echo(f"credentials     {state}: {number}")
        for status, number in session.exec(
            select(OutboxMessage.status, sa.func.count()).group_by(col(OutboxMessage.status))
        ).all():
            typer.echo(f"outbox          {status}: {number}")
        open_threads = count(
            select(sa.func.count()).select_from(SupportThread).where(SupportThread.status != "closed")
        )
        typer.echo(f"open threads    {open_threads}")
        held = count(select(sa.func.count()).select_from(SupportThread).where(
            col(SupportThread.escalation_held).is_not(None), SupportThread.status != "closed"))
        if held:
            _line("held", f"{held} escalation(s) kept from the staff room by the flood caps (mleg threads list)")
        quarantined = count(
            select(sa.func.count()).select_from(InboundMail).where(InboundMail.status == "quarantined")
        )
        typer.echo(f"quarantined     {quarantined} support e-mail(s) kept raw for staff (mleg threads list)")
        _outbox_lines(session, now)
        _failure_lines(session, now)
        _line("jobs lock", _lock_holder(session, LIFECYCLE_LOCK, now, "runs the lifecycle jobs"))
        if s.telegram.token and not s.telegram.webhook_url:
            _line("polling lock", _lock_holder(session, TELEGRAM_POLLING_LOCK, now, "polls Telegram"))
        if s.telegram.token:
            _webhook_lines(session, s, now)
        _job_lines(session, now)
        for health in read_health(session):
            state = "ok" if health.ok else f"FAILING since {_when(health.since, now)}"
            _line("connection", f"{health.name}: {state}, last {_when(health.checked_at, now)}: "
                                f"{redact_personal(health.detail)[:200]}")
