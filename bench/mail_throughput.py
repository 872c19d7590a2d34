"""Benchmark P2: support mails per second through the mailbox reader, next to a durable minimal reader.

    .venv/bin/python -m bench.mail_throughput [--mails 1000] [--db sqlite|postgres|both]

A private Dovecot is started here (tests/servers/dovecot.py, the suite's own recipe) and N
support mails with a realistic mix (FAQ questions in Polish and English, personal questions
from register addresses, questions nobody can answer automatically, auto-replies) are
delivered into it over LMTP. Then, in the same run, on the same mailbox:

- raw fetch: a bare aioimaplib session that UID FETCHes BODY.PEEK[] of every UID, in the
  batch size the product uses (`mail.frontend.FETCH_BATCH`), and does nothing else;
- durable minimal reader (the baseline the target is set against): the same FETCHes, the
  stdlib's `BytesParser(policy=policy.default)` over each mail (its Message-ID, From and
  Subject read), one INSERT per mail (those and the raw bytes) into the same database,
  committed once per FETCH batch: the least a Python mail processor that loses nothing does;
- product: `MailFrontend(ctx).process_once()` cycles until every mail is stored, parsed,
  threaded, answered (outbox rows) and committed.

It prints mails/s of each, the ratio product/durable reader (target: at least 0.5) and,
beside it, product/raw fetch. It also prints CPU milliseconds per mail (time.process_time of
this process, and for the product the CPU of the mail-reading worker process, mail/guard.py,
apart): on a shared machine that figure moves less than mails/s. No timed asserts: the
figures are for the README.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import smtplib
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from multiprocessing import forkserver
from pathlib import Path

import aioimaplib
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from bench.targets import verdict
from core.app.clock import FixedClock
from core.app.context import AppContext
from core.app.settings import load_settings
from core.storage.db import make_engine, upgrade
from core.storage.models import InboundMail, OutboxMessage, Student
from core.students.demo_register import make_pesel
from core.students.pesel import mask_pesel
from mail import frontend as frontend_module
from mail.frontend import MailFrontend
from mail.guard import stop_worker

__all__ = ["REGISTER_DOMAIN", "add_register", "deliver_many", "main", "support_mail"]

PG_ADMIN_URL = os.environ.get("MLEG_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "bench-secret-key-long-enough-0123456789-abcdef"
NOW = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)
REGISTER_DOMAIN = "student.example.edu.pl"

_FAQ_PL = [
    ("Nie dostałem maila", "Dzień dobry, złożyłem wniosek wczoraj i nie dostałem maila z kodem aktywacyjnym."),
    ("Kod wygasł", "Mój kod wygasł, minęło 30 dni. Co mam zrobić?"),
    ("Nowy telefon", "Zmieniłem telefon na nowy telefon. Jak przenieść legitymację?"),
    ("Przedłużenie", "Jak przedłużyć mLegitymację na nowy semestr?"),
]
_FAQ_EN = [
    ("Email did not arrive", "Hello, the activation email did not arrive. I checked spam."),
    ("Lost phone", "I lost my phone yesterday. What do I do with my student ID?"),
    ("Renewal", "How do I renew the student ID for the next semester?"),
]
_PERSONAL = ("Status wniosku", "Jaki jest status wniosku? Czy mam już legitymację?")
_UNKNOWN = [
    ("Pytanie", "Czy mogę odebrać dyplom w piątek po południu w dziekanacie?"),
    ("Question", "Can I bring my dog to the library on Sunday afternoon?"),
]


def support_mail(i: int, support: str, *, students: int = 200) -> bytes:
    """Mail number `i` of the realistic mix (deterministic): what a support inbox gets in October.

    Of every 20: 8 FAQ questions in Polish, 4 in English, 3 personal questions from a
    register address, 3 questions only a person can answer, 2 automatic mails (an
    out-of-office and a bounce), which must never be answered.
    """
    kind = i % 20
    message = EmailMessage()
    message["To"] = support
    message["Date"] = format_datetime(NOW)
    message["Message-ID"] = f"<bench-{i}-{uuid.uuid4().hex[:8]}@example.org>"
    if kind < 8:
        subject, text = _FAQ_PL[i % len(_FAQ_PL)]
        message["From"] = f"Student {i} <student{i}@example.org>"
    elif kind < 12:
        subject, text = _FAQ_EN[i % len(_FAQ_EN)]
        message["From"] = f"Student {i} <student{i}@example.org>"
    elif kind < 15:
        subject, text = _PERSONAL
        message["From"] = f"Anna Testowa <s{i % students}@{REGISTER_DOMAIN}>"
    elif kind < 18:
        subject, text = _UNKNOWN[i % len(_UNKNOWN)]
        message["From"] = f"osoba{i}@example.org"
    elif kind == 18:
        subject, text = "Automatyczna odpowiedź: Legitymacja", "Jestem na urlopie do 20 października."
        message["From"] = f"pracownik{i}@example.org"
        message["Auto-Submitted"] = "auto-replied"
        message["X-Auto-Response-Suppress"] = "All"
    else:
        subject, text = "Undelivered Mail Returned to Sender", "This is the mail system at host mx.example.org."
        message["From"] = "MAILER-DAEMON@mx.example.org (Mail Delivery System)"
        message["Auto-Submitted"] = "auto-replied"
    message["Subject"] = subject
    message.set_content(f"{text}\n\n-- \nStudent\n")
    return message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def deliver_many(host: str, port: int, recipient: str, mails: list[bytes]) -> None:
    """LMTP delivery over one connection (the way an MTA hands a queue to Dovecot)."""
    with smtplib.LMTP(host, port, timeout=60) as lmtp:
        for raw in mails:
            lmtp.sendmail("sender@example.org", [recipient], raw)


def add_register(engine: Engine, ctx: AppContext, students: int) -> None:
    """`students` register rows s0..sN at the university domain (the personal questions' senders)."""
    with Session(engine) as session:
        for n in range(students):
            pesel = make_pesel(date(2001, 1, 1 + n % 28), serial=100 + n, female=False)
            session.add(Student(
                album=str(600000 + n), first_name="Anna", last_name="Testowa", email=f"s{n}@{REGISTER_DOMAIN}",
                study_level="first_cycle", status="active", els_number=f"ELS-{n:08d}",
                els_valid_until=date(2027, 3, 31), row_digest="x", created_at=NOW, updated_at=NOW,
                pesel_hash=ctx.box.pesel_hash(pesel), pesel_masked=mask_pesel(pesel),
            ))
        session.commit()


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A fresh, migrated database URL (a temp SQLite file, or a throw-away PostgreSQL database)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            engine = make_engine(url)
            upgrade(engine)
            engine.dispose()
            yield url
        return
    admin = sa.create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1),
                             isolation_level="AUTOCOMMIT")
    name = f"mleg_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


async def _open_inbox(host: str, port: int, user: str, password: str) -> tuple[aioimaplib.IMAP4, list[int]]:
    """A plain IMAP session on INBOX, and the UIDs of every message in it."""
    imap = aioimaplib.IMAP4(host=host, port=port, timeout=60)
    await imap.wait_hello_from_server()
    await imap.login(user, password)
    await imap.select("INBOX")
    found = await imap.uid_search("ALL", charset=None)
    uids = [int(x) for line in found.lines if isinstance(line, bytes | bytearray)
            for x in bytes(line).split() if x.isdigit()]
    return imap, uids


async def baseline_fetch(host: str, port: int, user: str, password: str, batch: int) -> tuple[int, float]:
    """A raw UID FETCH BODY.PEEK[] of every message, `batch` UIDs per command; (messages, seconds)."""
    started = time.perf_counter()
    imap, uids = await _open_inbox(host, port, user, password)
    count = 0
    for start in range(0, len(uids), batch):
        chunk = ",".join(str(u) for u in uids[start:start + batch])
        response = await imap.uid("fetch", chunk, "(BODY.PEEK[])")
        count += sum(1 for line in response.lines if isinstance(line, bytearray))
    await imap.logout()
    return count, time.perf_counter() - started


_UID = re.compile(rb"\bUID (\d+)")
MINIMAL_TABLE = "bench_minimal_mail"


async def baseline_durable(host: str, port: int, user: str, password: str, batch: int,
                           url: str) -> tuple[int, float, float]:
    """The durable minimal reader: FETCH, parse with the stdlib, one INSERT per mail, a commit per
    FETCH batch (a crash loses at most the uncommitted batch, which is fetched again);
    (mails, seconds, CPU seconds of this process)."""
    engine = make_engine(url)  # the product's engine set-up (SQLite: WAL, synchronous=NORMAL)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {MINIMAL_TABLE}")
        raw_type = "BYTEA" if engine.dialect.name == "postgresql" else "BLOB"
        connection.exec_driver_sql(f"CREATE TABLE {MINIMAL_TABLE} (uid INTEGER PRIMARY KEY, message_id TEXT, "
                                   f"sender TEXT, subject TEXT, raw {raw_type} NOT NULL)")
    insert = sa.text(f"INSERT INTO {MINIMAL_TABLE} (uid, message_id, sender, subject, raw) "
                     "VALUES (:uid, :message_id, :sender, :subject, :raw)")
    parser = BytesParser(policy=policy.default)
    started, cpu_started = time.perf_counter(), time.process_time()
    imap, uids = await _open_inbox(host, port, user, password)
    count = 0
    for start in range(0, len(uids), batch):
        chunk = ",".join(str(u) for u in uids[start:start + batch])
        response = await imap.uid("fetch", chunk, "(UID BODY.PEEK[])")
        with engine.begin() as connection:  # one commit per FETCH batch
            uid: int | None = None
            raw: bytes | None = None
            for line in response.lines:
                if isinstance(line, bytearray):
                    raw = bytes(line)
                elif isinstance(line, bytes):
                    if b" FETCH " in line:  # a new message (the UID may come before or after its literal)
                        uid, raw = None, None
                    if found_uid := _UID.search(line):
                        uid = int(found_uid.group(1))
                if uid is not None and raw is not None:
                    mail = parser.parsebytes(raw)
                    connection.execute(insert, {
                        "uid": uid, "message_id": str(mail["Message-ID"] or ""), "sender": str(mail["From"] or ""),
                        "subject": str(mail["Subject"] or ""), "raw": raw})
                    count += 1
                    uid, raw = None, None
    await imap.logout()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    with engine.begin() as connection:
        stored = connection.exec_driver_sql(f"SELECT count(*), count(DISTINCT uid) FROM {MINIMAL_TABLE}").one()
        connection.exec_driver_sql(f"DROP TABLE {MINIMAL_TABLE}")
    engine.dispose()
    if tuple(stored) != (len(uids), len(uids)):
        raise RuntimeError(f"the durable minimal reader stored {tuple(stored)} of {len(uids)} mails")
    return count, elapsed, cpu


def _children_cpu() -> float:
    """CPU seconds of the mail-reading workers (mail/guard.py) so far, once the last one is stopped:
    this process's ended children, and the fork server's own time and its ended children's
    (the workers are forked from it; it waits for them, so their time shows in its cutime)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid is not None:
        time.sleep(0.2)  # the fork server waits for a stopped worker on SIGCHLD, a moment later
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return total
        # utime, stime, cutime, cstime: fields 14-17 of proc(5), counted from the state (field 3).
        total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


async def product(ctx: AppContext, total: int) -> tuple[int, float, float, float]:
    """process_once() cycles until every stored mail is done; (cycles, seconds, CPU seconds of this
    process, CPU seconds of the mail-reading worker process)."""
    reader = MailFrontend(ctx)
    ctx.faq  # noqa: B018  # trained at start-up (as `mleg serve` does), not counted in the mails' time
    stop_worker()  # so the worker's CPU counted below is this run's alone
    started, cpu_started, children_started = time.perf_counter(), time.process_time(), _children_cpu()
    cycles = 0
    while True:
        await reader.process_once()
        cycles += 1
        with Session(ctx.engine) as session:
            stored = session.exec(select(sa.func.count()).select_from(InboundMail)).one()
            waiting = session.exec(select(sa.func.count()).select_from(InboundMail)
                                   .where(InboundMail.status == "new")).one()
        if stored >= total and waiting == 0:
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            stop_worker()  # waited for, its CPU shows in RUSAGE_CHILDREN
            return cycles, elapsed, cpu, _children_cpu() - children_started
        if cycles > total:
            raise RuntimeError(f"not done after {cycles} cycles: {stored} stored, {waiting} new")


def run(kind: str, mails: int, students: int) -> None:
    from tests.servers.dovecot import DovecotServer

    with DovecotServer() as dovecot, database(kind) as url, tempfile.TemporaryDirectory() as tmp:
        support = dovecot.new_user(prefix="support")
        started = time.perf_counter()
        deliver_many(dovecot.host, dovecot.lmtp_port, support,
                     [support_mail(i, support, students=students) for i in range(mails)])
        delivery = time.perf_counter() - started
        batch = frontend_module.FETCH_BATCH
        fetched, base_s = asyncio.run(baseline_fetch(dovecot.host, dovecot.imap_port, support,
                                                     dovecot.password, batch))
        durable_n, durable_s, durable_cpu = asyncio.run(baseline_durable(dovecot.host, dovecot.imap_port, support,
                                                            dovecot.password, batch, url))
        settings = load_settings(
            mode="production", secret_key=SECRET, var_dir=Path(tmp) / "var", database_url=url,
            imap={"host": dovecot.host, "port": dovecot.imap_port, "security": "none", "username": support,
                  "password": dovecot.password},
            smtp={"host": "127.0.0.1", "port": 1, "security": "none", "sender": support},
            university={"help_desk_email": support},
        )
        engine = make_engine(url)
        ctx = AppContext(settings=settings, engine=engine, clock=FixedClock(NOW))
        add_register(engine, ctx, students)
        cycles, product_s, product_cpu, worker_cpu = asyncio.run(product(ctx, mails))
        with Session(engine) as session:
            statuses = session.exec(select(InboundMail.status, sa.func.count()).group_by(InboundMail.status)).all()
            answers = session.exec(select(sa.func.count()).select_from(OutboxMessage)
                                   .where(OutboxMessage.channel == "email")).one()
        engine.dispose()
    base_rate, durable_rate, product_rate = fetched / base_s, durable_n / durable_s, mails / product_s
    print(f"mail throughput, {mails} support mails, {kind} (delivered over LMTP in {delivery:.1f} s):")
    print(f"  raw UID FETCH BODY.PEEK[], {batch} per command           {fetched:6d} mails "
          f"{base_s:7.2f} s  {base_rate:8.1f} mails/s")
    print(f"  durable minimal reader (FETCH, BytesParser, INSERT)  {durable_n:6d} mails "
          f"{durable_s:7.2f} s  {durable_rate:8.1f} mails/s")
    print(f"  product: MailFrontend.process_once() x {cycles:<3d}          {mails:6d} mails "
          f"{product_s:7.2f} s  {product_rate:8.1f} mails/s")
    print(f"  CPU per mail: durable minimal reader {durable_cpu / durable_n * 1000:.2f} ms; product "
          f"{product_cpu / mails * 1000:.2f} ms in the serving process + {worker_cpu / mails * 1000:.2f} ms "
          f"in the mail-reading worker")
    print(f"  ratio product/durable reader {product_rate / durable_rate:.3f} "
          + verdict(f"P2 mail ({kind}): product / durable minimal reader", product_rate / durable_rate, ">=", 0.5))
    print(f"  ratio product/raw fetch      {product_rate / base_rate:.3f} (no target: the raw fetch parses and "
          f"stores nothing); outcomes {dict(sorted(statuses))}, outbox e-mails {answers}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="sqlite")
    args, _ = parser.parse_known_args(argv)
    for kind in (["sqlite", "postgres"] if args.db == "both" else [args.db]):
        run(kind, args.mails, args.students)


if __name__ == "__main__":
    main()
