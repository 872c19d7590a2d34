"""Several `mleg serve` on one PostgreSQL: one runs the lifecycle jobs; overlapping runs queue each reminder once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.app.context import AppContext
from core.jobs import run_due
from core.jobs.leader import Leadership
from core.jobs.scheduler import build_scheduler
from core.storage.db import make_engine, unit_of_work
from core.storage.models import Credential, JobRun, OutboxMessage, ReminderLog
from tests.factories import TEST_SECRET, add_student, build_ctx, make_settings
from tests.support.databases import truncate_all
from tests.support.lifecycle import at

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(postgres_database: str) -> str:
    engine = make_engine(postgres_database)
    truncate_all(engine)
    engine.dispose()
    return postgres_database


@pytest.fixture
def two_instances(tmp_path: Path, pg_url: str) -> Iterator[tuple[AppContext, AppContext]]:
    """Two processes' worth of context: own settings, own engine (own connections), same database."""
    from core.app.clock import FixedClock

    made = []
    for _ in range(2):
        settings = make_settings(tmp_path, database_url=pg_url)
        settings.jobs.batch_size = 7  # several batches, so the two runs interleave
        made.append(build_ctx(settings, make_engine(pg_url), FixedClock(datetime(2027, 3, 17, 7, tzinfo=UTC))))
    yield made[0], made[1]
    for ctx in made:
        ctx.engine.dispose()


def test_only_one_holder_of_the_lock(pg_url: str) -> None:
    first, second = Leadership(make_engine(pg_url)), Leadership(make_engine(pg_url))
    try:
        assert first.try_acquire() and first.try_acquire()  # re-checking keeps it
        assert not second.try_acquire()
        first.release()
        assert second.try_acquire() and not first.try_acquire()
    finally:
        first.release()
        second.release()


async def test_two_schedulers_one_leader_and_hand_over(two_instances: tuple[AppContext, AppContext]) -> None:
    a, b = (build_scheduler(ctx, drain=False, leader_retry_seconds=3600) for ctx in two_instances)
    await a.start()
    await b.start()
    try:
        assert [a.is_leader, b.is_leader] == [True, False]
        await a.idle()  # the leader's catch-up at start
        assert await a.check_leadership() and not await b.check_leadership()
        await b._lifecycle("sweep")()  # a follower's timer fires: it does nothing
        await a.stop()
        assert await b.check_leadership()  # the follower's retry takes over and catches up
    finally:
        await a.stop()
        await b.stop()
    with Session(two_instances[0].engine) as session:
        sweeps = session.exec(select(JobRun).where(JobRun.name == "sweep")).all()
    assert len(sweeps) == 2  # a's catch-up at start, b's catch-up on taking over; none from the follower


def test_two_concurrent_runs_queue_each_reminder_once(two_instances: tuple[AppContext, AppContext]) -> None:
    a, b = two_instances
    with unit_of_work(a.engine) as session:
        for _ in range(40):
            student, _ = add_student(session, a.box)
            session.add(Credential(student_id=student.id or 0, state="active", policy="standalone",
                                   valid_until=date(2027, 3, 31), created_at=a.clock.now(),
                                   updated_at=a.clock.now()))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(ctx: AppContext) -> None:
        try:
            at(ctx, "2027-03-17T10:00:00+01:00")  # in the sending hours
            barrier.wait()
            run_due(ctx)
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ctx,)) for ctx in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    with Session(a.engine) as session:
        keys = session.exec(select(OutboxMessage.idempotency_key).where(OutboxMessage.kind == "reminder")).all()
        logs = session.exec(select(ReminderLog)).all()
        runs = session.exec(select(JobRun).where(JobRun.name == "reminders")).all()
    assert len(keys) == len(set(keys)) == 40 and len(logs) == 40
    assert all(k.endswith(":validity-14-2027-03-31") for k in keys)
    assert len(runs) == 2 and all(r.ok for r in runs)


def _due_credentials(ctx: AppContext, count: int) -> None:
    with unit_of_work(ctx.engine) as session:
        for _ in range(count):
            student, _ = add_student(session, ctx.box)
            session.add(Credential(student_id=student.id or 0, state="active", policy="standalone",
                                   valid_until=date(2027, 3, 31), created_at=ctx.clock.now(),
                                   updated_at=ctx.clock.now()))


@pytest.mark.process
def test_two_processes_running_the_jobs_at_once_queue_each_reminder_once(
        two_instances: tuple[AppContext, AppContext], pg_url: str, tmp_path: Path) -> None:
    """Two real processes (`mleg jobs run-once`, what a scheduler tick runs) started together."""
    a, _ = two_instances
    _due_credentials(a, 60)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLEG_")} | {
        "MLEG_MODE": "production", "MLEG_SECRET_KEY": TEST_SECRET, "MLEG_DATABASE_URL": pg_url,
        "MLEG_VAR_DIR": str(tmp_path / "var"), "MLEG_JOBS__BATCH_SIZE": "7",
    }
    command = [sys.executable, "-m", "core.cli", "jobs", "run-once", "--now", "2027-03-17T10:00:00+01:00"]
    root = Path(__file__).resolve().parent.parent
    processes = [subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=120)[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    with Session(a.engine) as session:
        keys = session.exec(select(OutboxMessage.idempotency_key).where(OutboxMessage.kind == "reminder")).all()
        logs = session.exec(select(ReminderLog)).all()
    assert len(keys) == len(set(keys)) == 60 and len(logs) == 60
