"""Fault injection (issue 7), mail side: `mleg serve` killed, SMTP down, Dovecot restarted, PostgreSQL cut.

Real servers only: the suite's Dovecot and SMTP relay, `python -m core.cli serve --no-jobs` as
a subprocess. The kill test runs the issue's scale: 1,000 support mails (bench/mail_throughput.py's
realistic mix) streaming in, and 20 kill -9s at random moments.

Each run is compared, mail by mail, with a run of the same mails without faults (the same
pipeline in this process: stored, then processed): every mail must end as it does there (the
same status and reason, answered or not), so a quarantine, a lost answer or an answer too
many fails the test. Each test also checks that its fault really happened.

"Answered twice" means two different answers to one student mail. A kill between the SMTP
transaction and the commit that marks it sent can resend the same answer with the same
Message-ID (at-least-once delivery; the receiving side drops it as a duplicate): those are
counted and must stay at most one per kill.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from email import message_from_bytes
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench.mail_throughput import add_register, deliver_many, support_mail
from core.app.context import AppContext
from core.storage.db import make_engine
from core.support.faq import Faq
from mail import inbound
from tests.factories import TEST_SECRET, make_settings
from tests.servers.dovecot import DovecotServer
from tests.servers.fixtures import SmtpServerFactory
from tests.servers.smtp_relay import SmtpRelay
from tests.support.databases import truncate_all

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
FINAL = ("processed", "ignored", "quarantined")


class Serve:
    """`mleg serve --no-jobs` as a subprocess wired to the loopback servers."""

    def __init__(self, tmp: Path, db_url: str, dovecot: DovecotServer, support: str, relay: SmtpRelay) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLEG_")} | {
            "MLEG_MODE": "production", "MLEG_SECRET_KEY": TEST_SECRET, "MLEG_VAR_DIR": str(tmp / "var"),
            "MLEG_DATABASE_URL": db_url, "MLEG_IMAP__HOST": dovecot.host, "MLEG_IMAP__PORT": str(dovecot.imap_port),
            "MLEG_IMAP__USERNAME": support, "MLEG_IMAP__PASSWORD": dovecot.password,
            "MLEG_IMAP__SECURITY": "none", "MLEG_IMAP__POLL_INTERVAL_SECONDS": "0.3",
            "MLEG_IMAP__IDLE_TIMEOUT_SECONDS": "2", "MLEG_SMTP__HOST": relay.host,
            "MLEG_SMTP__PORT": str(relay.port), "MLEG_SMTP__SECURITY": "none", "MLEG_SMTP__SENDER": support,
            "MLEG_UNIVERSITY__HELP_DESK_EMAIL": support, "MLEG_LOG_LEVEL": "WARNING",
        }
        self.log = (tmp / "serve.log").open("ab")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "core.cli", "serve", "--no-jobs"], cwd=ROOT,
                                     env=self.env, stdout=self.log, stderr=self.log)

    def kill(self) -> None:
        if self.proc is not None:
            assert self.proc.poll() is None, "serve had stopped before the kill: no kill would happen"
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None
        self.log.close()


@pytest.fixture
def relay(smtp_server_factory: SmtpServerFactory) -> SmtpRelay:
    return smtp_server_factory(max_recorded=10_000)


def _state(engine: Engine) -> tuple[int, int, int, int]:
    """(inbound rows, rows not yet final, e-mail outbox rows, of them not yet sent)."""
    with engine.connect() as connection:
        inbound = connection.execute(sa.text("SELECT count(*) FROM inbound_mail")).scalar_one()
        open_ = connection.execute(sa.text(
            "SELECT count(*) FROM inbound_mail WHERE status NOT IN ('processed', 'ignored', 'quarantined')")
        ).scalar_one()
        out = connection.execute(sa.text("SELECT count(*) FROM outbox WHERE channel = 'email'")).scalar_one()
        unsent = connection.execute(sa.text(
            "SELECT count(*) FROM outbox WHERE channel = 'email' AND status != 'sent'")).scalar_one()
    return inbound, open_, out, unsent


def _wait_done(engine: Engine, total: int, within: float) -> tuple[int, int, int, int]:
    deadline = time.monotonic() + within
    while True:
        try:
            state = _state(engine)
        except sa.exc.OperationalError:
            state = (0, 0, 0, 0)
        if state[0] >= total and state[1] == 0 and state[3] == 0:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done: inbound/open/outbox/unsent = {state}")
        time.sleep(0.2)


Outcome = tuple[str, str, bool]  # (status, reason, answered)


def _mails(n: int, support: str) -> list[bytes]:
    """The same bytes (Message-IDs included) for the faulty run and the fault-free one."""
    return [support_mail(i, support) for i in range(n)]


def _index(message_id: str) -> int:
    """Mail number i of support_mail's mix, from its Message-ID (<bench-i-...>)."""
    return int(message_id.strip("<>").split("-")[1])


def _expected(tmp: Path, template: Path, count: int) -> dict[int, Outcome]:
    """The outcome of each of the first `count` mails of the mix in a run without faults: stored
    and processed in this process, on SQLite, keyed by the mail's number in the mix."""
    base = tmp / f"fault-free-{count}"
    (base / "var").mkdir(parents=True)
    url = f"sqlite:///{base / 'var' / 'test.db'}"
    shutil.copy(template, base / "var" / "test.db")
    support = "fault-free-support@example.edu.pl"
    settings = make_settings(base, database_url=url, imap={"username": support}, smtp={"sender": support},
                             university={"help_desk_email": support})
    engine = make_engine(url)
    try:
        ctx = AppContext(settings=settings, engine=engine)
        add_register(engine, ctx, 200)
        for uid, raw in enumerate(_mails(count, support), start=1):
            inbound.store_raw(ctx, mailbox="INBOX", uidvalidity=1, uid=uid, raw=raw, size=len(raw))
        faq = Faq.load(settings.config_dir / "faq")
        answered: set[int] = set()
        while done := inbound.process_pending(ctx, faq):
            answered |= {d.inbound_id for d in done if d.outcome is not None and d.outcome.answered}
        expected = {_index(mid): outcome for mid, outcome in
                    _outcomes(engine, lambda row_id, _mid: row_id in answered).items()}
    finally:
        engine.dispose()
    assert sorted(expected) == list(range(count))
    assert not [o for o in expected.values() if o[0] == "quarantined"]
    for i, (status, reason, answered_) in expected.items():  # the mix as support_mail makes it
        if i % 20 < 12:
            assert answered_ and reason.startswith("answered from the FAQ"), (i, reason)
        elif i % 20 >= 18:
            assert status == "ignored" and not answered_, (i, reason)
    return expected


# One fault-free run serves every test of the session: mail i's outcome depends only on the
# mails before it (threads, the per-sender daily cap), so a longer run's first n are a shorter one's.
_fault_free: tuple[int, Future[dict[int, Outcome]]] | None = None
_fault_free_lock = threading.Lock()


def _expect(tmp: Path, template: Path, count: int) -> Future[dict[int, Outcome]]:
    """`_expected` for at least `count` mails, in a thread of its own (it runs while the faulty run
    waits on its servers), or the one already made for as many or more."""
    global _fault_free
    with _fault_free_lock:
        if _fault_free is None or _fault_free[0] < count:
            pool = ThreadPoolExecutor(1, thread_name_prefix="fault-free")
            _fault_free = (count, pool.submit(_expected, tmp, template, count))
            pool.shutdown(wait=False)
        return _fault_free[1]


def _outcomes(engine: Engine, answered: Callable[[int, str], bool]) -> dict[str, Outcome]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT id, message_id, status, error FROM inbound_mail")).all()
    return {str(mid): (status, error or "", answered(row_id, str(mid))) for row_id, mid, status, error in rows}


def _check_outcomes(engine: Engine, relay: SmtpRelay, fault_free: Future[dict[int, Outcome]], count: int) -> None:
    """Every mail ended as it does without faults: same status and reason, answered exactly when it is there."""
    replied = {str(message_from_bytes(m.data)["In-Reply-To"]).strip("<>") for m in relay.messages}
    actual = {_index(mid): o for mid, o in _outcomes(engine, lambda _id, mid: mid.strip("<>") in replied).items()}
    quarantined = sorted(i for i, o in actual.items() if o[0] == "quarantined")
    assert not quarantined, f"quarantined: mails {quarantined[:5]} ({len(quarantined)})"
    assert sorted(actual) == list(range(count))
    expected = fault_free.result(timeout=180)
    wrong = {i: (actual[i], expected[i]) for i in range(count) if actual[i] != expected[i]}
    assert not wrong, f"{len(wrong)} mails ended otherwise than without faults, e.g. {list(wrong.items())[:3]}"


def _check_answers(relay: SmtpRelay, outbox_rows: int, max_resends: int) -> None:
    """Every answer row reached the SMTP server; no student mail got two different answers."""
    answers: dict[str, set[str]] = {}
    copies: Counter[str] = Counter()
    for message in relay.messages:
        parsed = message_from_bytes(message.data)
        answers.setdefault(str(parsed["In-Reply-To"]), set()).add(str(parsed["Message-ID"]))
        copies[str(parsed["Message-ID"])] += 1
    assert sum(len(ids) for ids in answers.values()) == outbox_rows
    assert all(len(ids) == 1 for ids in answers.values()), "a student mail got two different answers"
    resends = sum(n - 1 for n in copies.values())
    assert resends <= max_resends
    print(f"{outbox_rows} answers, each to one student mail; {resends} resent with the same Message-ID")


@pytest.fixture
def setup(tmp_path: Path, sqlite_url: str, dovecot: DovecotServer,
          relay: SmtpRelay) -> Iterator[tuple[Serve, Engine, str]]:
    support = dovecot.new_user(prefix="support")
    engine = make_engine(sqlite_url)
    add_register(engine, AppContext(settings=make_settings(tmp_path), engine=engine), 200)
    serve = Serve(tmp_path, sqlite_url, dovecot, support, relay)
    yield serve, engine, support
    serve.stop()
    engine.dispose()


def _kill_9_run(serve: Serve, engine: Engine, support: str, dovecot: DovecotServer, relay: SmtpRelay,
               tmp_path: Path, template: Path, *, mails: int, kills: int, expire_leases: str) -> None:
    sent = _mails(mails, support)
    expected = _expect(tmp_path, template, mails)
    rng = random.Random(7)
    feeder = threading.Thread(target=lambda: [deliver_many(dovecot.host, dovecot.lmtp_port, support, sent[s:s + 20])
                                              or time.sleep(0.1) for s in range(0, mails, 20)])
    serve.start()
    feeder.start()
    busy = 0  # kills that found work not yet done (mail to store, process or answer)
    for _ in range(kills):
        time.sleep(rng.uniform(0.3, 1.5))  # somewhere in fetch, store, process, send or flag
        state = _state(engine)
        busy += state[0] < mails or state[1] > 0 or state[3] > 0
        serve.kill()
        serve.start()
    feeder.join()
    assert busy >= kills // 2, f"only {busy} of {kills} kills hit a serve with work to do"
    # Rows a killed sender had claimed stay leased for sending.LEASE (5 minutes) and are then
    # sent by the next drainer; the test moves the lease's end instead of waiting for it.
    deadline = time.monotonic() + 60
    while _state(engine)[0] < mails or _state(engine)[1]:
        assert time.monotonic() < deadline, _state(engine)
        time.sleep(0.2)
    with engine.begin() as connection:
        connection.execute(sa.text(f"UPDATE outbox SET lease_until = {expire_leases} WHERE status = 'sending'"))
    state = _wait_done(engine, mails, within=60)
    assert state[0] == mails  # nothing lost, nothing stored twice
    _check_answers(relay, state[2], max_resends=kills)
    _check_outcomes(engine, relay, expected, mails)


def test_kill_9_of_serve_while_mail_streams_in(setup: tuple[Serve, Engine, str], dovecot: DovecotServer,
                                               relay: SmtpRelay, tmp_path: Path, sqlite_template: Path) -> None:
    serve, engine, support = setup
    _kill_9_run(serve, engine, support, dovecot, relay, tmp_path, sqlite_template, mails=1000, kills=20,
                expire_leases="'2000-01-01 00:00:00'")


@pytest.mark.postgres
def test_kill_9_of_serve_on_postgres(tmp_path: Path, postgres_database: str, dovecot: DovecotServer,
                                     relay: SmtpRelay, sqlite_template: Path) -> None:
    engine = make_engine(postgres_database)
    truncate_all(engine)
    add_register(engine, AppContext(settings=make_settings(tmp_path), engine=engine), 200)
    support = dovecot.new_user(prefix="support")
    serve = Serve(tmp_path, postgres_database, dovecot, support, relay)
    try:
        _kill_9_run(serve, engine, support, dovecot, relay, tmp_path, sqlite_template, mails=100, kills=4,
                    expire_leases="now() - interval '1 minute'")
    finally:
        serve.stop()
        engine.dispose()


def test_smtp_down_then_back_every_answer_once(setup: tuple[Serve, Engine, str], dovecot: DovecotServer,
                                               relay: SmtpRelay, tmp_path: Path, sqlite_template: Path) -> None:
    serve, engine, support = setup
    sent = _mails(30, support)
    expected = _expect(tmp_path, sqlite_template, 30)
    relay.stop()
    serve.start()
    deliver_many(dovecot.host, dovecot.lmtp_port, support, sent)
    deadline = time.monotonic() + 20
    while _state(engine)[1] or _state(engine)[0] < 30:  # processed and queued while SMTP is down
        assert time.monotonic() < deadline
        time.sleep(0.2)
    deadline = time.monotonic() + 20
    while _failed_attempts(engine) < _state(engine)[2]:  # each answer tried once and failed while SMTP is down
        assert time.monotonic() < deadline, "the answers were not all tried while SMTP was down"
        time.sleep(0.2)
    assert relay.messages == []
    relay.start()
    state = _wait_done(engine, 30, within=40)  # the first retry comes 10 s after the failure
    assert state[2] > 0
    with engine.connect() as connection:  # each answer went through only at a second attempt or later
        assert connection.execute(sa.text(
            "SELECT min(attempts) FROM outbox WHERE channel = 'email'")).scalar_one() >= 2
    _check_answers(relay, state[2], max_resends=0)
    _check_outcomes(engine, relay, expected, 30)


def _failed_attempts(engine: Engine) -> int:
    """E-mail outbox rows whose last attempt failed (an error recorded, waiting for the retry)."""
    with engine.connect() as connection:
        return connection.execute(sa.text(
            "SELECT count(*) FROM outbox WHERE channel = 'email' AND status = 'pending' AND attempts >= 1 "
            "AND last_error IS NOT NULL")).scalar_one()


def test_dovecot_restart_mid_run_loses_nothing(setup: tuple[Serve, Engine, str], dovecot: DovecotServer,
                                               relay: SmtpRelay, tmp_path: Path, sqlite_template: Path) -> None:
    serve, engine, support = setup
    sent = _mails(150, support)
    expected = _expect(tmp_path, sqlite_template, 150)
    serve.start()
    deliver_many(dovecot.host, dovecot.lmtp_port, support, sent[:100])
    deadline = time.monotonic() + 20
    while _state(engine)[0] == 0:  # serve is connected and reading when Dovecot goes away
        assert time.monotonic() < deadline, "serve never read the mailbox"
        time.sleep(0.05)
    dovecot.restart(down_for=1.0)
    deliver_many(dovecot.host, dovecot.lmtp_port, support, sent[100:])
    state = _wait_done(engine, 150, within=40)
    assert state[0] == 150
    # The restart cut serve's IMAP session: it saw the error and connected again.
    assert b"support mailbox: " in (tmp_path / "serve.log").read_bytes()
    _check_answers(relay, state[2], max_resends=0)
    _check_outcomes(engine, relay, expected, 150)


@pytest.mark.postgres
def test_postgres_connections_dropped_mid_run(tmp_path: Path, postgres_database: str, dovecot: DovecotServer,
                                              relay: SmtpRelay, sqlite_template: Path) -> None:
    engine = make_engine(postgres_database)
    truncate_all(engine)
    add_register(engine, AppContext(settings=make_settings(tmp_path), engine=engine), 200)
    support = dovecot.new_user(prefix="support")
    sent = _mails(200, support)
    expected = _expect(tmp_path, sqlite_template, 200)
    serve = Serve(tmp_path, postgres_database, dovecot, support, relay)
    name = postgres_database.rsplit("/", 1)[1]
    try:
        serve.start()
        deliver_many(dovecot.host, dovecot.lmtp_port, support, sent)
        terminated = []
        for _ in range(4):
            time.sleep(0.3)
            # Cut serve's connection in the middle of handling a mail: its transaction holds the
            # claim's row lock on inbound_mail, has looked up support threads, and has not yet
            # recorded the outcome (no write lock on inbound_mail). Not only idle pooled ones a ping replaces.
            deadline = time.monotonic() + 20
            cut = 0
            while not cut:
                assert time.monotonic() < deadline, f"serve was never seen processing a mail (rounds: {terminated})"
                with engine.connect() as connection:
                    cut = connection.execute(sa.text(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid != pg_backend_pid() "
                        "AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = pg_stat_activity.pid "
                        "AND l.relation = 'inbound_mail'::regclass AND l.mode = 'RowShareLock') "
                        "AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = pg_stat_activity.pid "
                        "AND l.relation = 'support_thread'::regclass) "
                        "AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = pg_stat_activity.pid "
                        "AND l.relation = 'inbound_mail'::regclass AND l.mode = 'RowExclusiveLock')"),
                        {"name": name}).scalar_one()
                    connection.commit()
            terminated.append(cut)
        deadline = time.monotonic() + 60
        while _state(engine)[0] < 200 or _state(engine)[1]:
            assert time.monotonic() < deadline, _state(engine)
            time.sleep(0.2)
        # A drainer cut off between claiming and marking leaves rows leased for sending.LEASE.
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE outbox SET lease_until = now() - interval '1 minute' "
                                       "WHERE status = 'sending'"))
        state = _wait_done(engine, 200, within=60)
        assert state[0] == 200
        _check_answers(relay, state[2], max_resends=4)
        _check_outcomes(engine, relay, expected, 200)
        # The cuts reached the mail being handled: serve saw the errors and tried those mails again.
        assert b"temporary database error" in (tmp_path / "serve.log").read_bytes()
        print(f"connections ended per round: {terminated}")
    finally:
        serve.stop()
        engine.dispose()
