"""Two `mleg serve` on one database: every mail, outbox row and staff update is handled once.

Each "server" here is an AppContext with an engine of its own (its own connections), both on
the same database, driven in threads or tasks of this process. Where the race needs the two
to overlap, the first one is held inside its transaction until the second has either given
up or is seen waiting on the first one's lock: no sleeps decide an outcome.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select
from telegram import User

from bot import polling
from bot.delivery import Delivery
from bot.polling import Poller
from bot.runtime import BotRuntime, runtime_for
from bot.staff import StaffRoom
from core.app import serve
from core.app.clock import FixedClock
from core.app.context import AppContext
from core.jobs.leader import Leadership
from core.messaging import outbox, sending
from core.messaging.outgoing import OutgoingMessage
from core.storage.db import make_engine, unit_of_work
from core.storage.models import InboundMail, OutboxMessage, OutboxStatus, SupportMessage, SupportThread
from core.support import answers as staff_answers
from core.support import threads as support
from core.support.faq import Faq
from mail import inbound
from tests.cli_helpers import cli_environment, run
from tests.factories import build_ctx, make_settings
from tests.mail_samples.kit import mail_ctx, sample
from tests.servers.botapi import BotApiStandIn
from tests.support.databases import truncate_all

pytestmark = pytest.mark.timeout(60)
WAIT = 30.0  # the most any step may take before the test is declared stuck
NOW = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Block until `condition` holds; only a stuck test ever reaches the deadline."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"stuck waiting for: {what}")
        time.sleep(0.01)


@pytest.fixture
def two(tmp_path: Path, db_url: str, clock: FixedClock) -> Iterator[tuple[AppContext, AppContext]]:
    """Two servers' contexts on one database (SQLite file or PostgreSQL), sharing one clock."""
    made = [mail_ctx(tmp_path, db_url, clock) for _ in range(2)]
    yield made[0], made[1]
    for ctx in made:
        ctx.engine.dispose()


@pytest.fixture
def pg_url(postgres_database: str) -> str:
    engine = make_engine(postgres_database)
    truncate_all(engine)
    engine.dispose()
    return postgres_database


def _someone_waits_on_a_lock(engine: sa.Engine) -> bool:
    with engine.connect() as connection:
        return bool(connection.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar())


# --- 1. a support mail is processed by one server ----------------------------------------------

def test_a_support_mail_is_processed_by_one_server_only(two: tuple[AppContext, AppContext],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two
    raw = sample("win1250_question.eml", sender="pawel@example.org", support="pomoc@example.edu.pl", n="1")
    inbound.store_raw(a, mailbox="INBOX", uidvalidity=1, uid=1, raw=raw, size=len(raw))
    faq = Faq.load(a.settings.config_dir / "faq")
    real = inbound.handle_inbound
    a_decided, b_went_on = threading.Event(), threading.Event()

    def handle(ctx: AppContext, *args: Any, **kwargs: Any) -> Any:
        if ctx is a:
            outcome = real(ctx, *args, **kwargs)  # decided and written, not committed yet
            a_decided.set()
            assert b_went_on.wait(WAIT)
            return outcome
        b_went_on.set()  # B decides too (SQLite: it waits for A's write lock, then must give up)
        return real(ctx, *args, **kwargs)

    monkeypatch.setattr(inbound, "handle_inbound", handle)
    results: dict[str, Any] = {}

    def server(name: str, ctx: AppContext) -> None:
        try:
            results[name] = inbound.process_pending(ctx, faq)
        except BaseException as exc:  # surfaced below
            results[name] = exc
        finally:
            if ctx is b:
                b_went_on.set()

    first = threading.Thread(target=server, args=("a", a))
    first.start()
    assert a_decided.wait(WAIT)
    second = threading.Thread(target=server, args=("b", b))
    second.start()
    for thread in (first, second):
        thread.join(WAIT)
    assert not any(isinstance(r, BaseException) for r in results.values()), results
    with Session(a.engine) as session:
        [row] = session.exec(select(InboundMail)).all()
        threads = session.exec(select(SupportThread)).all()
        questions = session.exec(select(SupportMessage).where(SupportMessage.direction == "in")).all()
        answers = session.exec(select(OutboxMessage).where(OutboxMessage.channel == "email")).all()
    assert row.status == "processed"
    assert (len(threads), len(questions), len(answers)) == (1, 1, 1)
    assert [m.status for m in results["a"]] == ["processed"] and results["b"] == []


# --- 2. an outbox row is sent by one server ----------------------------------------------------

def _queue(ctx: AppContext, count: int, channel: str = "email", recipient: str = "s@student.example.edu.pl"
           ) -> list[int]:
    with unit_of_work(ctx.engine) as session:
        rows = [outbox.enqueue(session, ctx.box, key=f"two-{channel}-{i}", channel=channel, recipient=recipient,
                               kind="test", message=OutgoingMessage(text=f"message {i}", subject="s"),
                               now=ctx.clock.now()) for i in range(count)]
        session.flush()
        return [r.id or 0 for r in rows]


def _rows(ctx: AppContext) -> dict[int, OutboxMessage]:
    with Session(ctx.engine) as session:
        return {r.id or 0: r for r in session.exec(select(OutboxMessage)).all()}


@pytest.mark.postgres
def test_two_drainers_claiming_at_once_never_take_the_same_row(tmp_path: Path, pg_url: str, clock: FixedClock,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A's claim holds its rows (selected and leased, not committed) while B claims: B must pass them by."""
    a, b = (mail_ctx(tmp_path, pg_url, clock) for _ in range(2))
    queued = _queue(a, 30)
    real = sending.claim_due
    a_claimed, a_may_commit = threading.Event(), threading.Event()

    def claim_due(session: Session, **kwargs: Any) -> list[OutboxMessage]:
        rows = real(session, **kwargs)
        if session.get_bind() is a.engine:
            a_claimed.set()
            assert a_may_commit.wait(WAIT)
        return rows

    monkeypatch.setattr(sending, "claim_due", claim_due)
    sent: list[tuple[str, int]] = []
    finished: dict[str, Any] = {}

    def server(name: str, ctx: AppContext) -> None:
        async def deliver(row: OutboxMessage, _message: OutgoingMessage) -> sending.DeliveryResult:
            sent.append((name, row.id or 0))
            return sending.DeliveryResult(ok=True, external_id=f"{name}-{row.id}")

        try:
            finished[name] = asyncio.run(sending.drain_once(ctx.engine, ctx.box, channel="email", now=ctx.clock.now,
                                                           deliver=deliver, limit=20))
        except BaseException as exc:  # surfaced below
            finished[name] = exc
        finally:
            a_may_commit.set()  # never leave A waiting when B failed

    try:
        first = threading.Thread(target=server, args=("a", a))
        first.start()
        assert a_claimed.wait(WAIT)
        second = threading.Thread(target=server, args=("b", b))
        second.start()
        # B either claimed past A's rows already, or waits on A's row locks (what a claim without
        # SKIP LOCKED does, to take the same rows once A commits).
        _wait_for(lambda: bool(finished) or _someone_waits_on_a_lock(a.engine), "B's claim beside A's")
        a_may_commit.set()
        for thread in (first, second):
            thread.join(WAIT)
        assert finished.keys() == {"a", "b"} and not any(isinstance(r, BaseException) for r in finished.values())
        by_row: dict[int, list[str]] = {}
        for name, row_id in sent:
            by_row.setdefault(row_id, []).append(name)
        twice = {row_id: names for row_id, names in by_row.items() if len(names) > 1}
        assert not twice, f"{len(twice)} rows sent by both servers"
        assert sorted(by_row) == sorted(queued)  # each row sent once
        assert sorted(name for name, _ in sent) == ["a"] * 20 + ["b"] * 10
        assert {r.status for r in _rows(a).values()} == {OutboxStatus.SENT}
    finally:
        for ctx in (a, b):
            ctx.engine.dispose()


async def test_rows_whose_lease_ran_out_while_queued_are_left_to_the_other_server(
        two: tuple[AppContext, AppContext]) -> None:
    """A slow relay: A's deliveries outlast the lease of the last row queued behind them; B takes it.

    The second row waited four minutes: its lease is renewed before it goes. While it is being
    sent the third row's lease runs out and B claims it: A must leave it to B.
    """
    a, b = two
    ids = _queue(a, 3)
    sent_by: dict[str, list[int]] = {"a": [], "b": []}

    async def slow_a(row: OutboxMessage, message: OutgoingMessage) -> sending.DeliveryResult:
        sent_by["a"].append(row.id or 0)
        a.clock.advance(timedelta(minutes=4) if len(sent_by["a"]) == 1 else timedelta(minutes=2))  # type: ignore[attr-defined]
        if len(sent_by["a"]) == 2:
            # The other server's drainer runs meanwhile: only the third row's lease is over.
            assert await sending.drain_once(b.engine, b.box, channel="email", now=b.clock.now, deliver=fast_b) == 1
        return sending.DeliveryResult(ok=True)

    async def fast_b(row: OutboxMessage, message: OutgoingMessage) -> sending.DeliveryResult:
        sent_by["b"].append(row.id or 0)
        return sending.DeliveryResult(ok=True)

    await sending.drain_once(a.engine, a.box, channel="email", now=a.clock.now, deliver=slow_a)
    assert sent_by == {"a": ids[:2], "b": ids[2:]}
    rows = _rows(a)
    assert [(rows[i].status, rows[i].attempts) for i in ids] == [
        (OutboxStatus.SENT, 1), (OutboxStatus.SENT, 1), (OutboxStatus.SENT, 2)]


async def test_a_chain_skips_rows_whose_lease_ran_out_while_queued(two: tuple[AppContext, AppContext]) -> None:
    """The same in `mleg serve`'s per-recipient chains (Telegram)."""
    a, b = two
    ids = _queue(a, 3, channel="telegram", recipient="42")
    sent_by: dict[str, list[int]] = {"a": [], "b": []}

    class Sender:
        channel = "telegram"
        rate_per_second = 0.0
        concurrent_deliveries = 2

        async def deliver(self, row: OutboxMessage, message: OutgoingMessage) -> sending.DeliveryResult:
            sent_by["a"].append(row.id or 0)
            a.clock.advance(timedelta(minutes=4) if len(sent_by["a"]) == 1 else timedelta(minutes=2))  # type: ignore[attr-defined]
            if len(sent_by["a"]) == 2:
                taken = await asyncio.to_thread(sending.claim, b.engine, channel="telegram", now=b.clock.now())
                sent_by["b"] += [r.id or 0 for r in taken]
                for row_b in taken:
                    await asyncio.to_thread(sending.record, b.engine, row_b, sending.DeliveryResult(ok=True),
                                            b.clock.now())
            return sending.DeliveryResult(ok=True)

        async def close(self) -> None:
            return None

    drainer = serve._ByRecipient(a, "telegram", cast(Any, Sender()), 2)
    try:
        assert await drainer.claim() == 3
        while drainer._tasks:
            await asyncio.wait(set(drainer._tasks))
    finally:
        await drainer.stop()
    assert sent_by == {"a": ids[:2], "b": ids[2:]}
    assert {r.status for r in _rows(a).values()} == {OutboxStatus.SENT}


def test_an_outcome_is_recorded_only_over_the_recorders_own_lease(two: tuple[AppContext, AppContext]) -> None:
    a, b = two
    [row_id] = _queue(a, 1)
    [mine] = sending.claim(a.engine, channel="email", now=a.clock.now())
    a.clock.advance(sending.LEASE + timedelta(seconds=1))  # type: ignore[attr-defined]
    [theirs] = sending.claim(b.engine, channel="email", now=b.clock.now())
    assert sending.record(b.engine, theirs, sending.DeliveryResult(ok=True, external_id="<b@x>"), b.clock.now())
    # A's slow attempt ends after B's: its failure must not make B's sent row due again.
    assert not sending.record(a.engine, mine, sending.DeliveryResult(ok=False, error="timeout"), a.clock.now())
    row = _rows(a)[row_id]
    assert (row.status, row.external_id, row.attempts) == (OutboxStatus.SENT, "<b@x>", 2)


def test_an_expired_lease_nobody_took_is_still_recorded(two: tuple[AppContext, AppContext]) -> None:
    a, _ = two
    [row_id] = _queue(a, 1)
    [mine] = sending.claim(a.engine, channel="email", now=a.clock.now())
    a.clock.advance(sending.LEASE + timedelta(seconds=1))  # type: ignore[attr-defined]
    assert sending.record(a.engine, mine, sending.DeliveryResult(ok=True), a.clock.now())
    assert _rows(a)[row_id].status == OutboxStatus.SENT


def test_release_gives_back_only_rows_still_leased_to_this_server(two: tuple[AppContext, AppContext]) -> None:
    a, b = two
    ids = _queue(a, 2)
    mine = sending.claim(a.engine, channel="email", now=a.clock.now())
    a.clock.advance(sending.LEASE + timedelta(seconds=1))  # type: ignore[attr-defined]
    [theirs] = sending.claim(b.engine, channel="email", now=b.clock.now(), limit=1)
    sending.release(a.engine, mine)  # A stops: hands back what it never started
    rows = _rows(a)
    assert (rows[theirs.id or 0].status, rows[theirs.id or 0].attempts) == (OutboxStatus.SENDING, 2)
    other = next(i for i in ids if i != theirs.id)
    assert (rows[other].status, rows[other].attempts) == (OutboxStatus.PENDING, 0)  # A's, never started


# --- 3. a staff-room update is acted on once ---------------------------------------------------

def _thread_for_staff(ctx: AppContext) -> int:
    with unit_of_work(ctx.engine) as session:
        thread = support.open_thread(ctx, session, student_id=None, channel="telegram", account_id="9191",
                                     text="Czy mogę odebrać legitymację w innym dziale?", language="pl")
        return thread.id or 0


def _staff_rooms(tmp_path: Path, url: str) -> list[StaffRoom]:
    rooms = []
    for _ in range(2):
        settings = make_settings(tmp_path, database_url=url,
                                 telegram={"token": "7000000001:AAH-x", "staff_chat_id": -100777})
        ctx = build_ctx(settings, make_engine(url), FixedClock(NOW))
        rooms.append(StaffRoom(cast(BotRuntime, SimpleNamespace(ctx=ctx))))
    return rooms


STAFFER = User(id=4711, first_name="Ewa", is_bot=False, username="ewa")


@pytest.mark.postgres
async def test_one_staff_update_polled_by_both_servers_answers_the_student_once(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    room_a, room_b = _staff_rooms(tmp_path, pg_url)
    a, b = room_a.ctx, room_b.ctx
    thread_id = _thread_for_staff(a)
    real = staff_answers.staff_reply
    a_acting, b_done = threading.Event(), threading.Event()

    def reply(ctx: AppContext, *args: Any, **kwargs: Any) -> Any:
        result = real(ctx, *args, **kwargs)
        if ctx is a:
            a_acting.set()
            # Hold A's transaction open until B has given up or waits on A's lock.
            _wait_for(lambda: b_done.is_set() or _someone_waits_on_a_lock(a.engine), "B to give up or wait")
        return result

    monkeypatch.setattr(staff_answers, "staff_reply", reply)
    update = SimpleNamespace(update_id=777)
    try:
        first = asyncio.create_task(room_a.answer(cast(Any, update), thread_id, "Tak, można.", STAFFER))
        assert await asyncio.to_thread(a_acting.wait, WAIT)
        second = asyncio.create_task(room_b.answer(cast(Any, update), thread_id, "Tak, można.", STAFFER))
        second.add_done_callback(lambda _: b_done.set())
        await asyncio.gather(first, second)
        with Session(a.engine) as session:
            answers = session.exec(select(OutboxMessage).where(OutboxMessage.kind == staff_answers.ANSWER_KIND)).all()
            acks = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "staff-ack")).all()
            said = session.exec(select(SupportMessage).where(SupportMessage.direction == "out")).all()
        assert (len(answers), len(acks), len(said)) == (1, 1, 1)
        assert outbox.open_body(a.box, acks[0]).text  # the acknowledgement carries its text
    finally:
        a.engine.dispose()
        b.engine.dispose()


async def test_a_redelivered_staff_update_is_not_acted_on_again(tmp_path: Path, db_url: str) -> None:
    room_a, room_b = _staff_rooms(tmp_path, db_url)
    try:
        thread_id = _thread_for_staff(room_a.ctx)
        update = SimpleNamespace(update_id=778)
        for room in (room_a, room_b, room_a):
            await room.answer(cast(Any, update), thread_id, "Tak, można.", STAFFER)
        with Session(room_a.ctx.engine) as session:
            answers = session.exec(select(OutboxMessage).where(OutboxMessage.kind == staff_answers.ANSWER_KIND)).all()
            acks = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "staff-ack")).all()
        assert (len(answers), len(acks)) == (1, 1)
        assert outbox.open_body(room_a.ctx.box, acks[0]).text
    finally:
        room_a.ctx.engine.dispose()
        room_b.ctx.engine.dispose()


# --- 4. one getUpdates per installation ------------------------------------------------------

def _bot_ctx(tmp_path: Path, url: str, api: BotApiStandIn) -> AppContext:
    settings = make_settings(tmp_path, database_url=url,
                             telegram={"token": api.token, "api_base_url": api.base_url})
    return build_ctx(settings, make_engine(url), FixedClock(NOW))


async def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"stuck waiting for: {what}")
        await asyncio.sleep(0.01)


@pytest.mark.postgres
async def test_only_one_server_polls_and_the_other_takes_over(tmp_path: Path, pg_url: str,
                                                              api: BotApiStandIn) -> None:
    contexts = [_bot_ctx(tmp_path, pg_url, api) for _ in range(2)]
    runtimes = [runtime_for(ctx) for ctx in contexts]
    pollers: list[Poller] = []
    try:
        for runtime in runtimes:
            await runtime.acquire()
        first, second = (Poller(runtime.app, ctx=runtime.ctx, lock_retry_seconds=0.05, timeout=1)
                         for runtime in runtimes)
        pollers += [first, second]
        first.start()
        await _wait(lambda: first.polling, "the first server to poll")
        second.start()
        await _wait(lambda: second.lock_tries > 1, "the second server to find the lock taken, twice")
        assert not second.polling
        api.push_text(1, 1, "hello")
        await _wait(lambda: api.updates_pending() == 0, "the update to be confirmed")
        conflicts = [c for c in api.calls("getUpdates", include_polling=True) if c.status == 409]
        assert conflicts == []  # the two never polled at once
        # The first server stops (or dies): its lock goes with its connection. (Its last long poll,
        # abandoned, is ended by the stand-in with a 409 once the second polls: no one hears that.)
        await first.stop()
        await _wait(lambda: second.polling, "the second server to take over")
        api.push_text(1, 1, "hello again")
        await _wait(lambda: api.updates_pending() == 0, "the second update to be confirmed")
    finally:
        for poller in pollers:
            await poller.stop()
        for runtime in runtimes:
            await runtime.release()
        for ctx in contexts:
            ctx.engine.dispose()


async def test_a_conflict_from_telegram_is_one_clear_error_and_a_back_off(
        tmp_path: Path, sqlite_url: str, api: BotApiStandIn, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another installation polls with the same token: one ERROR naming it, not a warning a second."""
    monkeypatch.setattr(polling, "CONFLICT_PAUSE_SECONDS", 0.01, raising=False)
    monkeypatch.setattr(polling, "ERROR_PAUSE_SECONDS", (0.01,))
    ctx = _bot_ctx(tmp_path, sqlite_url, api)
    runtime = runtime_for(ctx)
    await runtime.acquire()
    api.fail_next("getUpdates", 409, "Conflict: terminated by other getUpdates request; make sure that only "
                  "one bot instance is running", count=3)
    poller = Poller(runtime.app, timeout=1)
    caplog.set_level(logging.INFO, logger="bot.polling")
    try:
        poller.start()
        api.push_text(1, 1, "hello")
        await _wait(lambda: api.updates_pending() == 0, "polling to resume after the conflicts")
    finally:
        await poller.stop()
        await runtime.release()
        ctx.engine.dispose()
    records = [r for r in caplog.records if r.name == "bot.polling" and r.levelno >= logging.WARNING]
    assert [r.levelname for r in records] == ["ERROR"], [r.getMessage() for r in records]
    assert "another" in records[0].getMessage() and "token" in records[0].getMessage()


# --- 5. a row behind one in flight elsewhere re-checks soon ------------------------------------

def test_a_row_behind_one_being_sent_elsewhere_is_retried_in_seconds(two: tuple[AppContext, AppContext]) -> None:
    a, b = two
    first, second = _queue(a, 2, channel="telegram", recipient="42")
    [older] = sending.claim(b.engine, channel="telegram", now=b.clock.now(), limit=1)  # in flight at B
    assert older.id == first
    [mine] = sending.claim(a.engine, channel="telegram", now=a.clock.now())
    assert mine.id == second
    delivery = Delivery(a, "telegram")
    waiting = delivery.older_row_waiting(mine)
    assert waiting is not None and waiting.id == first
    result = delivery.wait_behind(waiting)
    assert result.retry_after is not None and result.retry_after <= timedelta(seconds=5)
    assert sending.record(a.engine, mine, result, a.clock.now())
    row = _rows(a)[second]
    # Waiting its turn is no failed attempt: a row behind a slow one must not run out of attempts.
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 0)
    assert row.next_attempt_at <= a.clock.now() + timedelta(seconds=5)


# --- 6. mleg status tells an operator how the servers are doing -------------------------------

@pytest.mark.process
def test_status_shows_schema_jobs_locks_and_the_oldest_pending_message(tmp_path: Path, db_url: str) -> None:
    ctx = mail_ctx(tmp_path, db_url, FixedClock(NOW))
    try:
        from core.jobs.ledger import run_job

        run_job(ctx, "sweep", lambda _ctx: {"expired": 0})
        _queue(ctx, 2)
        with unit_of_work(ctx.engine) as session:
            session.execute(sa.update(OutboxMessage).where(col(OutboxMessage.id) == 1)
                            .values(last_error="451 try later", attempts=2))
    finally:
        ctx.engine.dispose()
    leader = Leadership(make_engine(db_url))
    try:
        assert leader.try_acquire()  # a server runs the jobs (on PostgreSQL: holds the lock)
        env = cli_environment(tmp_path, db_url, MLEG_TELEGRAM__TOKEN="7000000001:AAH-x")
        result = run(["status"], env)
    finally:
        leader.release()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "students        0" in out  # the existing lines stay
    labelled = {line[:16].strip(): line[16:] for line in out.splitlines() if line.strip()}
    assert labelled["schema"].endswith("(head)")
    if db_url.startswith("postgresql"):
        assert labelled["jobs lock"].startswith("held by a server (database pid ")
        assert labelled["polling lock"] == "free: no server polls Telegram"
    else:
        assert "SQLite" in labelled["jobs lock"] and "SQLite" in labelled["polling lock"]
    assert "sweep: ok" in out and "reminders: never run" in out
    oldest = labelled["oldest pending"]
    assert "#1 email" in oldest and "next attempt" in oldest and "451 try later" in oldest
