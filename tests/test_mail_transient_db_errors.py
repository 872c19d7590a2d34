"""A temporary database error while a support mail is processed is retried, not the mail's fault.

Real PostgreSQL errors, not raised by hand: the processing connection is terminated from
another connection (what an administrator's restart or a failover does: AdminShutdown), and
a lock held elsewhere runs a `lock_timeout` out (LockNotAvailable). Only a failure that
repeats on the same mail quarantines it; a mail the rules cannot handle still is at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.storage.db import make_engine
from core.storage.db_errors import is_transient
from core.storage.models import InboundMail, OutboxMessage
from core.support.faq import Faq
from mail import inbound
from tests.mail_samples.kit import mail_ctx, sample
from tests.support.databases import truncate_all

pytestmark = pytest.mark.postgres
SUPPORT = "support@example.edu.pl"


@pytest.fixture
def ctx(tmp_path: Path, postgres_database: str, clock: FixedClock,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[AppContext]:
    engine = make_engine(postgres_database)
    truncate_all(engine)
    engine.dispose()
    monkeypatch.setattr(inbound, "BACKOFF_SECONDS", (0.0,) * 8)  # the waits between tries, not their number
    made = mail_ctx(tmp_path, postgres_database, clock, smtp={"sender": SUPPORT},
                    university={"help_desk_email": SUPPORT})
    yield made
    made.engine.dispose()


@pytest.fixture
def faq(ctx: AppContext) -> Faq:
    return Faq.load(ctx.settings.config_dir / "faq")


def _store(ctx: AppContext, n: int) -> int:
    raw = sample("win1250_question.eml", support=SUPPORT, n=str(n), sender=f"s{n}@example.org")
    stored = inbound.store_raw(ctx, mailbox="INBOX", uidvalidity=1, uid=n, raw=raw, size=len(raw))
    assert stored.inbound_id is not None
    return stored.inbound_id


def _rows(ctx: AppContext) -> list[InboundMail]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(InboundMail).order_by(InboundMail.id)).all())  # type: ignore[arg-type]


def _answers(ctx: AppContext) -> list[str]:
    with Session(ctx.engine) as session:
        return sorted(r.recipient for r in session.exec(select(OutboxMessage).where(OutboxMessage.channel == "email")))


def _terminate(ctx: AppContext, session: Session) -> None:
    """Cut the processing transaction's own connection from the server side."""
    pid = session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    with ctx.engine.connect() as admin:
        assert admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()


def _cut_on(ctx: AppContext, monkeypatch: pytest.MonkeyPatch, calls: set[int]) -> list[int]:
    """Terminate the connection in the middle of the handling calls numbered in `calls` (1-based)."""
    real = inbound.handle_inbound
    seen: list[int] = []

    def cut(context: AppContext, session: Session, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["inbound_id"])
        if len(seen) in calls:
            _terminate(ctx, session)
        return real(context, session, *args, **kwargs)

    monkeypatch.setattr(inbound, "handle_inbound", cut)
    return seen


def test_a_connection_cut_mid_mail_is_retried_and_the_mail_answered(
        ctx: AppContext, faq: Faq, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = _store(ctx, 1), _store(ctx, 2)
    seen = _cut_on(ctx, monkeypatch, {1})

    done = inbound.process_pending(ctx, faq)

    assert seen == [first, first, second]  # the cut really hit the first mail, which was tried again
    assert [(d.inbound_id, d.status) for d in done] == [(first, "processed"), (second, "processed")]
    assert [r.status for r in _rows(ctx)] == ["processed", "processed"]
    assert _answers(ctx) == ["s1@example.org", "s2@example.org"]  # each answered once


def test_a_cut_that_repeats_on_the_same_mail_quarantines_it_and_only_it(
        ctx: AppContext, faq: Faq, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = _store(ctx, 1), _store(ctx, 2)
    tries = inbound.ATTEMPTS_PER_BATCH * inbound.BATCHES_BEFORE_QUARANTINE
    seen = _cut_on(ctx, monkeypatch, set(range(1, tries + 1)))

    for batch in range(inbound.BATCHES_BEFORE_QUARANTINE - 1):
        assert inbound.process_pending(ctx, faq) == []  # left `new`: the next batch tries again
        assert [r.status for r in _rows(ctx)] == ["new", "new"]
        assert seen == [first] * inbound.ATTEMPTS_PER_BATCH * (batch + 1)
    done = inbound.process_pending(ctx, faq)

    assert seen == [first] * tries + [second]
    assert [(d.inbound_id, d.status) for d in done] == [(first, "quarantined"), (second, "processed")]
    quarantined = _rows(ctx)[0]
    assert "AdminShutdown" in (quarantined.error or "") or "OperationalError" in (quarantined.error or "")
    assert _answers(ctx) == ["s2@example.org"]


def test_a_success_in_between_starts_the_count_again(
        ctx: AppContext, faq: Faq, monkeypatch: pytest.MonkeyPatch) -> None:
    _store(ctx, 1)
    per_batch = inbound.ATTEMPTS_PER_BATCH
    # Every try of the first batches fails; the next batch's first try gets through.
    seen = _cut_on(ctx, monkeypatch, set(range(1, per_batch * (inbound.BATCHES_BEFORE_QUARANTINE - 1) + 1)))
    for _ in range(inbound.BATCHES_BEFORE_QUARANTINE - 1):
        assert inbound.process_pending(ctx, faq) == []
    [done] = inbound.process_pending(ctx, faq)
    assert done.status == "processed" and len(seen) == per_batch * (inbound.BATCHES_BEFORE_QUARANTINE - 1) + 1


def test_a_mail_the_rules_cannot_handle_is_still_quarantined_at_once(
        ctx: AppContext, faq: Faq, monkeypatch: pytest.MonkeyPatch) -> None:
    _store(ctx, 1)
    calls = 0

    def broken(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        raise ValueError("cannot make sense of it")

    monkeypatch.setattr(inbound, "read_stored", broken)
    [done] = inbound.process_pending(ctx, faq)
    assert done.status == "quarantined" and calls == 1


def _real_error(postgres_database: str, sql: list[str]) -> sa.exc.DBAPIError:
    engine = make_engine(postgres_database)
    try:
        with engine.connect() as connection:
            for statement in sql:
                connection.execute(sa.text(statement))
    except sa.exc.DBAPIError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("no error")


def test_which_database_errors_count_as_temporary(postgres_database: str) -> None:
    holder = make_engine(postgres_database)
    try:
        with holder.connect() as held:
            held.execute(sa.text("CREATE TABLE IF NOT EXISTS h21_lock (id int primary key)"))
            held.execute(sa.text("INSERT INTO h21_lock VALUES (1) ON CONFLICT DO NOTHING"))
            held.commit()
            held.execute(sa.text("SELECT * FROM h21_lock WHERE id = 1 FOR UPDATE"))
            lock_timeout = _real_error(postgres_database, [
                "SET lock_timeout = '50ms'", "SELECT * FROM h21_lock WHERE id = 1 FOR UPDATE"])
            held.rollback()
            held.execute(sa.text("DROP TABLE h21_lock"))
            held.commit()
    finally:
        holder.dispose()
    shutdown = _real_error(postgres_database, ["SELECT pg_terminate_backend(pg_backend_pid())"])
    syntax = _real_error(postgres_database, ["SELEC 1"])
    division = _real_error(postgres_database, ["SELECT 1/0"])

    assert isinstance(lock_timeout.orig, psycopg.errors.LockNotAvailable) and is_transient(lock_timeout)
    assert is_transient(shutdown)
    assert not is_transient(syntax) and not is_transient(division)
    assert not is_transient(ValueError("cannot make sense of it"))
    for sqlstate in ("40001", "40P01", "57P01", "08006"):  # serialization, deadlock, shutdown, link lost
        error = psycopg.errors.lookup(sqlstate)
        assert is_transient(sa.exc.OperationalError("SELECT 1", {}, error())), sqlstate
