"""The jobs' batch size by database: short write transactions on SQLite, longer ones on PostgreSQL,
one size for both when MLEG_JOBS__BATCH_SIZE is set."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.app.settings_sections import JobsSettings
from core.jobs import sweep
from core.storage.models import AuditEvent, Credential, Student
from tests.factories import build_ctx, make_settings

NOW = datetime(2027, 4, 1, 6, 0, tzinfo=UTC)
DUE = 5_001  # one more than PostgreSQL's default batch: two batches there, six of 1,000 on SQLite


def _due_credentials(ctx: AppContext, n: int) -> None:
    stamp = datetime(2026, 9, 1, tzinfo=UTC)
    with ctx.engine.begin() as connection:
        connection.execute(sa.insert(Student), [
            {"album": f"B{i}", "first_name": "Anna", "last_name": "Testowa", "email": f"b{i}@student.example.edu.pl",
             "study_level": "first_cycle", "status": "active", "row_digest": "x", "created_at": stamp,
             "updated_at": stamp} for i in range(n)])
        ids = connection.execute(sa.select(Student.id).order_by(Student.id)).scalars().all()  # type: ignore[arg-type]
        connection.execute(sa.insert(Credential), [
            {"public_id": f"p{i}", "student_id": sid, "state": "active", "policy": "standalone",
             "valid_until": date(2027, 3, 31), "created_at": stamp, "updated_at": stamp}
            for i, sid in enumerate(ids)])


def _sweep_batches(ctx: AppContext) -> int:
    """Sweep the due credentials; how many transactions it took (one audit row per batch)."""
    assert isinstance(ctx.clock, FixedClock)
    ctx.clock.set(NOW)
    assert sweep(ctx)["validity_expired"] == DUE
    with Session(ctx.engine) as session:
        return len(session.exec(select(AuditEvent).where(AuditEvent.action == "credential.expired.batch")).all())


def test_unset_batch_size_is_the_databases_own() -> None:
    jobs = JobsSettings()
    assert (jobs.batch_size_for("sqlite"), jobs.batch_size_for("postgresql")) == (1000, 5000)
    jobs.batch_size = 250
    assert (jobs.batch_size_for("sqlite"), jobs.batch_size_for("postgresql")) == (250, 250)


def test_sweep_batches_by_database(ctx: AppContext) -> None:
    _due_credentials(ctx, DUE)
    expected = {"sqlite": 6, "postgresql": 2}[ctx.engine.dialect.name]
    assert _sweep_batches(ctx) == expected


def test_mleg_jobs_batch_size_sets_both(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str,
                                        clock: FixedClock, ctx: AppContext) -> None:
    monkeypatch.setenv("MLEG_JOBS__BATCH_SIZE", "2500")
    settings = make_settings(tmp_path, database_url=db_url)
    assert settings.jobs.batch_size == 2500
    mine = build_ctx(settings, ctx.engine, clock)
    _due_credentials(mine, DUE)
    assert _sweep_batches(mine) == 3  # 2,500 + 2,500 + 1 on SQLite and on PostgreSQL alike
