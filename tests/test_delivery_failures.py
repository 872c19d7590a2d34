"""A delivery that keeps failing is said: logged per attempt, raised once, shown by `mleg status`, alerted.

The staff room fails the way an operator met it: the Bot API answers getChat with a shape
python-telegram-bot cannot read, so every escalation dies inside the sender with a TypeError
(a defect). E-mail fails the common way: the SMTP server answers 451 to every message.
Real parts throughout: the Bot API stand-in, the SMTP server relaying into Dovecot, SQLite,
`mleg status --json` as a subprocess; a FixedClock stands in for the hours between retries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from bot.channel import make_staff_channel
from core.app.clock import FixedClock
from core.app.context import AppContext
from core.app.plugins import ChannelSender
from core.jobs.drain import drain_all
from core.messaging import delivery_failures, outbox, sending
from core.messaging.delivery_alerts import OPERATORS_ALERT_KIND, STAFF_ALERT_KIND, alert_on_error
from core.messaging.outgoing import OutgoingMessage
from core.storage.db import make_engine, unit_of_work
from core.storage.models import OutboxMessage, OutboxStatus
from core.support import threads as support
from mail.channel import SmtpChannel
from tests.bot_harness import STAFF_CHAT, new_student, outbox_rows
from tests.cli_helpers import cli_environment, run
from tests.factories import build_ctx, make_settings
from tests.mail_samples.kit import parse
from tests.servers.botapi import BotApiStandIn
from tests.servers.dovecot import DovecotServer
from tests.servers.smtp_relay import SmtpRelay

pytestmark = pytest.mark.timeout(120)
# What the Bot API answered in the operator's report: a newer shape, one field short for this library.
UNREADABLE_GIFT_TYPES = {"unlimited_gifts": False, "limited_gifts": False, "unique_gifts": False,
                         "premium_subscription": False}


@pytest.fixture(autouse=True)
def _fresh_defect_memory() -> Iterator[None]:
    """Which defects had their traceback shown is per process; each test starts from none."""
    delivery_failures._seen.clear()
    yield
    delivery_failures._seen.clear()


@pytest.fixture
def api(api: BotApiStandIn) -> BotApiStandIn:
    """The shared stand-in (tests/conftest.py) with the staff room in it."""
    api.add_chat(STAFF_CHAT, chat_type="supergroup", title="Biuro obsługi mLegitymacji")
    return api


def _ctx(tmp_path: Path, sqlite_url: str, clock: FixedClock, api: BotApiStandIn, smtp: SmtpRelay,
         **operations: Any) -> AppContext:
    settings = make_settings(
        tmp_path, database_url=sqlite_url,
        telegram={"token": api.token, "api_base_url": api.base_url, "staff_chat_id": STAFF_CHAT,
                  "messages_per_chat_per_second": 200.0},
        smtp={"host": smtp.host, "port": smtp.port, "security": "none", "sender": "mlegitymacja@uni.example.test"},
        operations=operations,
    )
    return build_ctx(settings, make_engine(sqlite_url), clock)


def _senders(ctx: AppContext) -> dict[str, ChannelSender]:
    staff = make_staff_channel(ctx)
    assert staff is not None
    return {"email": SmtpChannel(ctx.settings, ctx.clock), "staff": staff}


def _escalate(ctx: AppContext, text: str) -> int:
    student, _ = new_student(ctx)
    with unit_of_work(ctx.engine) as session:
        support.open_thread(ctx, session, student_id=student.id, channel="telegram", account_id="7001",
                            text=text, language="pl", subject=text[:40])
    [row] = outbox_rows(ctx, channel="staff", kind="escalation")
    return row.id or 0


def _row(ctx: AppContext, row_id: int) -> OutboxMessage:
    with Session(ctx.engine) as session:
        row = session.get(OutboxMessage, row_id)
        assert row is not None
        return row


def _messages(caplog: pytest.LogCaptureFixture, level: int, *needles: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == level and all(n in r.getMessage() for n in needles)]


def _status_json(tmp_path: Path, sqlite_url: str) -> dict[str, Any]:
    result = run(["status", "--json"], cli_environment(tmp_path, sqlite_url))
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@pytest.mark.process
async def test_staff_room_failing_by_a_defect_is_logged_shown_and_the_operators_are_told(
    tmp_path: Path, sqlite_url: str, clock: FixedClock, api: BotApiStandIn, smtp_server: SmtpRelay,
    dovecot: DovecotServer, mailbox_user: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    ctx = _ctx(tmp_path, sqlite_url, clock, api, smtp_server, alert_email=mailbox_user)
    api.set_full_chat_fields(STAFF_CHAT, accepted_gift_types=UNREADABLE_GIFT_TYPES)
    row_id = _escalate(ctx, "Nie dostałem maila z kodem")
    senders = _senders(ctx)
    attempts = 6
    try:
        for attempt in range(1, attempts + 1):
            await drain_all(ctx, senders)
            row = _row(ctx, row_id)
            assert (row.status, row.attempts) == (OutboxStatus.PENDING, attempt)
            if attempt == 1:
                # A defect: not retried at a network error's pace (10 s), nor dropped.
                assert row.next_attempt_at - clock.now() >= delivery_failures.DEFECT_FIRST_RETRY
            clock.advance(hours=1)
    finally:
        for sender in senders.values():
            await sender.close()

    assert "TypeError" in (row.last_error or "") and "gifts_from_channels" in (row.last_error or "")
    assert api.sent_messages(STAFF_CHAT) == []
    # One WARNING per failed attempt, with the row, channel, kind, attempt, error class and message.
    warnings = _messages(caplog, logging.WARNING, "delivery failed", f"outbox row {row_id},")
    assert len(warnings) == attempts
    for attempt, line in enumerate(warnings, start=1):
        assert "channel staff" in line and "kind escalation" in line and f"attempt {attempt}:" in line
        assert "TypeError: AcceptedGiftTypes.__init__() missing 1 required positional argument" in line
    # One ERROR once it keeps failing, saying what to do; the traceback once, not per attempt.
    [keeps_failing] = _messages(caplog, logging.ERROR, "keeps failing", f"outbox row {row_id},")
    assert "what to do" in keeps_failing
    assert "defect" in keeps_failing and "report it" in keeps_failing
    [traceback] = [r for r in caplog.records if "Traceback (most recent call last)" in r.getMessage()]
    assert traceback.levelno == logging.ERROR and "staff_room.py" in traceback.getMessage()
    assert "gifts_from_channels" in traceback.getMessage()

    # `mleg status --json` and `mleg status` show it, by channel and kind.
    [failing] = _status_json(tmp_path, sqlite_url)["failing_deliveries"]
    assert (failing["channel"], failing["kind"], failing["count"]) == ("staff", "escalation", 1)
    assert "TypeError" in failing["last_error"]
    text = run(["status"], cli_environment(tmp_path, sqlite_url))
    assert "failing         staff (escalation): 1 message(s) not sent" in text.stdout

    # The operators' address got one alert, through the real SMTP server into its mailbox.
    [alert] = outbox_rows(ctx, kind=OPERATORS_ALERT_KIND)
    assert (alert.channel, alert.recipient, alert.status) == ("email", mailbox_user, OutboxStatus.SENT)
    [raw] = dovecot.fetch_all(mailbox_user)
    mail = parse(raw)
    assert "Pokój obsługi w Telegramie jest nieosiągalny" in str(mail["Subject"])  # default_language pl
    body = mail.get_body(("plain",))
    assert body is not None
    content = body.get_content()
    assert "MLEG_TELEGRAM__STAFF_CHAT_ID" in content and "TypeError" in content and str(STAFF_CHAT) in content
    assert mail["Auto-Submitted"] == "auto-generated"


@pytest.mark.process
async def test_email_failing_is_logged_shown_and_the_staff_room_is_told_once(
    tmp_path: Path, sqlite_url: str, clock: FixedClock, api: BotApiStandIn, smtp_server: SmtpRelay,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    ctx = _ctx(tmp_path, sqlite_url, clock, api, smtp_server)
    ids = []
    with unit_of_work(ctx.engine) as session:
        for n in (1, 2):
            row = outbox.enqueue(session, ctx.box, key=f"activation-{n}", channel="email", kind="activation",
                                 recipient=f"anna.{n}@student.example.edu.pl", now=clock.now(),
                                 message=OutgoingMessage(text="Twój kod aktywacyjny", subject="mLegitymacja"))
            session.flush()
            ids.append(row.id or 0)
    smtp_server.fail_next(1000, code=451, message="mailbox busy, try again later")
    senders = _senders(ctx)
    attempts = 6
    try:
        for _ in range(attempts):
            await drain_all(ctx, senders)
            clock.advance(hours=1)
        for row_id in ids:
            assert (_row(ctx, row_id).status, _row(ctx, row_id).attempts) == (OutboxStatus.PENDING, attempts)

        for row_id in ids:
            warnings = _messages(caplog, logging.WARNING, "delivery failed", f"outbox row {row_id},")
            assert len(warnings) == attempts
            assert all("channel email" in w and "kind activation" in w
                       and "SMTPDataError: SMTP 451 4.3.0 mailbox busy" in w for w in warnings)
            [keeps_failing] = _messages(caplog, logging.ERROR, "keeps failing", f"outbox row {row_id},")
            assert "MLEG_SMTP__HOST" in keeps_failing
        # A transport error the sender knows is no defect: no traceback.
        assert not [r for r in caplog.records if "Traceback" in r.getMessage() or r.exc_info]
        assert not _messages(caplog, logging.WARNING, "anna.")  # no address in the log

        [failing] = _status_json(tmp_path, sqlite_url)["failing_deliveries"]
        assert (failing["channel"], failing["kind"], failing["count"]) == ("email", "activation", 2)
        assert "451" in failing["last_error"]

        # Both rows reached ERROR in the same drain: the staff room was told once.
        [told] = api.sent_messages(STAFF_CHAT)
        assert "E-maile do studentów nie wychodzą: czekają 2 wiadomości" in (told.plain_text or "")
        assert "451" in (told.plain_text or "")
        [alert] = outbox_rows(ctx, kind=STAFF_ALERT_KIND)
        assert alert.status == OutboxStatus.SENT

        # The mail server back: everything goes, nothing is failing any more.
        smtp_server.fail_next(0)
        await drain_all(ctx, senders)
    finally:
        for sender in senders.values():
            await sender.close()
    assert {_row(ctx, row_id).status for row_id in ids} == {OutboxStatus.SENT}
    assert _status_json(tmp_path, sqlite_url)["failing_deliveries"] == []


def _alert_ctx(tmp_path: Path, db_url: str, clock: FixedClock) -> AppContext:
    settings = make_settings(tmp_path, database_url=db_url,
                             telegram={"token": "123456:" + "A" * 35, "staff_chat_id": STAFF_CHAT},
                             operations={"alert_email": "ops@uni.example.test"})
    return build_ctx(settings, make_engine(db_url), clock)


def _failed_row(ctx: AppContext, channel: str, kind: str, key: str) -> OutboxMessage:
    with unit_of_work(ctx.engine) as session:
        row = outbox.enqueue(session, ctx.box, key=key, channel=channel, kind=kind, recipient="x",
                             now=ctx.clock.now(), message=OutgoingMessage(text="x"))
        row.attempts, row.last_error = 4, "NetworkError: down"
        session.flush()
        session.expunge(row)
    return row


def _alerts(ctx: AppContext) -> list[tuple[str, str]]:
    with Session(ctx.engine) as session:
        rows = session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))).all()
        return [(r.channel, r.kind) for r in rows if r.idempotency_key.startswith("alert:")]


def test_alerts_at_most_once_per_interval_and_never_about_the_last_resort(
    tmp_path: Path, db_url: str, clock: FixedClock,
) -> None:
    """On SQLite and PostgreSQL: the alerts read the failing rows back (core.messaging.delivery_failures.failing)."""
    ctx = _alert_ctx(tmp_path, db_url, clock)
    failure = sending.DeliveryResult(ok=False, error="NetworkError: down")
    staff_row = _failed_row(ctx, "staff", "escalation", "s1")
    alert_on_error(ctx, staff_row, failure, clock.now())
    clock.advance(minutes=59)
    alert_on_error(ctx, staff_row, failure, clock.now())
    assert _alerts(ctx) == [("email", OPERATORS_ALERT_KIND)]
    clock.advance(minutes=2)
    alert_on_error(ctx, staff_row, failure, clock.now())
    assert _alerts(ctx) == [("email", OPERATORS_ALERT_KIND)] * 2

    # The operators' own alert failing raises nothing: a dead mail server and a dead staff room
    # do not feed each other alerts.
    operators_row = _failed_row(ctx, "email", OPERATORS_ALERT_KIND, "o1")
    alert_on_error(ctx, operators_row, failure, clock.now())
    assert _alerts(ctx) == [("email", OPERATORS_ALERT_KIND)] * 2
    # E-mail to a student failing tells the staff room (its own interval).
    alert_on_error(ctx, _failed_row(ctx, "email", "activation", "a1"), failure, clock.now())
    alert_on_error(ctx, _failed_row(ctx, "email", "activation", "a2"), failure, clock.now())
    assert sorted(_alerts(ctx)) == sorted([("email", OPERATORS_ALERT_KIND)] * 2 + [("staff", STAFF_ALERT_KIND)])


async def test_transport_errors_retry_fast_defects_slowly_with_one_traceback_per_kind(
    ctx: AppContext, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with unit_of_work(ctx.engine) as session:
        ids = [outbox.enqueue(session, ctx.box, key=f"k{n}", channel="email", kind="activation", recipient="x",
                              now=ctx.clock.now(), message=OutgoingMessage(text=f"m{n}")) for n in range(4)]
        session.flush()
        row_ids = [row.id for row in ids]

    async def deliver(row: OutboxMessage, message: OutgoingMessage) -> sending.DeliveryResult:
        if message.text == "m0":
            raise ConnectionRefusedError("server down")
        if message.text == "m3":
            raise ValueError("another bug")
        results: dict[str, sending.DeliveryResult] = {}
        return results[message.text + "-missing"]  # a KeyError, raised at the same place for m1 and m2

    await sending.drain_once(ctx.engine, ctx.box, channel="email", now=ctx.clock.now, deliver=deliver)
    rows = [_row(ctx, row_id or 0) for row_id in row_ids]
    now = ctx.clock.now()
    assert rows[0].next_attempt_at - now == timedelta(seconds=10)  # the network pace
    assert all(r.next_attempt_at - now >= delivery_failures.DEFECT_FIRST_RETRY for r in rows[1:])
    tracebacks = [r.getMessage() for r in caplog.records if "Traceback" in r.getMessage()]
    assert len(tracebacks) == 2  # KeyError once for two rows, ValueError once
    assert sum("KeyError" in t for t in tracebacks) == 1 and sum("another bug" in t for t in tracebacks) == 1
    assert len(_messages(caplog, logging.WARNING, "delivery failed")) == 4


def test_a_student_blocking_the_bot_is_logged_but_no_ones_error(caplog: pytest.LogCaptureFixture) -> None:
    raised: list[int] = []
    reporter = delivery_failures.FailureReporter(error_after_attempts=1,
                                                 on_error=lambda row, result, now: raised.append(row.id or 0))
    row = OutboxMessage(id=5, idempotency_key="k", channel="telegram", recipient="7", kind="reply", attempts=1)
    refused = sending.DeliveryResult(ok=False, permanent=True, error="Forbidden: bot was blocked by the user",
                                    recipient_refused=True)
    caplog.set_level(logging.INFO)
    reporter(row, refused, row.created_at, gave_up=True, next_attempt_at=None)
    assert len(_messages(caplog, logging.WARNING, "delivery failed", "Forbidden")) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR] and raised == []
    reporter(row, sending.DeliveryResult(ok=False, permanent=True, error="BadRequest: chat not found"),
             row.created_at, gave_up=True, next_attempt_at=None)
    assert len(_messages(caplog, logging.ERROR, "given up", "outbox row 5,")) == 1 and raised == [5]
