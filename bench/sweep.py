"""The expiry sweep over N credentials (1% and 100% due) next to one bare SQL UPDATE, same table, same run.

    .venv/bin/python -m bench.sweep [--rows 1000000] [--db sqlite|postgres|both] [--runs 3] [--batch-size N]

The table is built once (COPY on PostgreSQL, executemany on SQLite, in a throw-away
database) and reset between measurements. Each figure is measured `--runs` times and
the median is what is printed and compared with the target (sweep <= 2.0x the bare
UPDATE; 1% due <= 0.05 of 100% due); each run's ratio is printed beside it. The sweep
runs with the product's batch size for the database (core.jobs.batch: 1,000 rows per
transaction on SQLite, 5,000 on PostgreSQL) unless `--batch-size` sets one, as
MLEG_JOBS__BATCH_SIZE would. The sweep does more than the bare UPDATE: per
credential it also writes a credential_event row (who, why, when), one audit row per batch,
and runs its other, here empty, queries; a third figure, "bare+rows", does the same
per-credential writes in two unbatched statements, so the price of batching and of the
extra rows can be told apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench.targets import verdict
from core.app.clock import FixedClock
from core.app.context import AppContext
from core.app.settings import load_settings
from core.jobs.sweep import sweep
from core.storage.db import make_engine, upgrade

PG_ADMIN_URL = os.environ.get("MLEG_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "bench-secret-key-long-enough-0123456789-abcdef"
STAMP = datetime(2027, 1, 10, 9, 0, tzinfo=UTC)
EARLY_END, LATE_END = date(2027, 3, 30), date(2027, 3, 31)
ONE_PERCENT_DAY, ALL_DAY = date(2027, 3, 31), date(2027, 4, 1)  # "today" for 1% due and 100% due

BARE = (
    "UPDATE credential SET state = 'expired' "
    "WHERE state IN ('pending_activation', 'active') AND valid_until < :today"
)
BARE_ROWS = [
    "INSERT INTO credential_event (credential_id, from_state, to_state, actor, reason, at) "
    "SELECT id, state, 'expired', 'jobs', 'validity_ended', :now FROM credential "
    "WHERE state IN ('pending_activation', 'active') AND valid_until < :today",
    "UPDATE credential SET state = 'expired', updated_at = :now, ended_at = :now, end_reason = 'validity_ended', "
    "code_hash = NULL, qr_token_hash = NULL WHERE state IN ('pending_activation', 'active') AND valid_until < :today",
]


def _rows(n: int) -> Iterator[tuple[int, str]]:
    """(index, valid_until): the first 1% end a day earlier than the rest."""
    early = max(1, n // 100)
    for i in range(n):
        yield i, (EARLY_END if i < early else LATE_END).isoformat()


def _fill_sqlite(engine: Engine, n: int) -> None:
    stamp = STAMP.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    with engine.begin() as connection:
        cursor = connection.connection.cursor()
        cursor.executemany(
            "INSERT INTO student (id, album, first_name, last_name, email, study_level, status, row_digest, "
            "created_at, updated_at) VALUES (?, ?, 'A', 'B', ?, 'first_cycle', 'active', '', ?, ?)",
            ((i + 1, f"A{i}", f"s{i}@student.example.edu.pl", stamp, stamp) for i, _ in _rows(n)),
        )
        cursor.executemany(
            "INSERT INTO credential (id, public_id, student_id, state, policy, valid_until, code_hash, created_at, "
            "updated_at) VALUES (?, ?, ?, 'active', 'standalone', ?, NULL, ?, ?)",
            ((i + 1, uuid.uuid4().hex, i + 1, end, stamp, stamp) for i, end in _rows(n)),
        )


def _fill_postgres(engine: Engine, n: int) -> None:
    with engine.begin() as connection:
        raw = connection.connection.driver_connection
        with raw.cursor() as cursor:  # type: ignore[union-attr]
            with cursor.copy("COPY student (id, album, first_name, last_name, email, study_level, status, "
                             "row_digest, created_at, updated_at) FROM STDIN") as copy:
                for i, _ in _rows(n):
                    copy.write_row((i + 1, f"A{i}", "A", "B", f"s{i}@student.example.edu.pl", "first_cycle",
                                    "active", "", STAMP, STAMP))
            with cursor.copy("COPY credential (id, public_id, student_id, state, policy, valid_until, created_at, "
                             "updated_at) FROM STDIN") as copy:
                for i, end in _rows(n):
                    copy.write_row((i + 1, uuid.uuid4().hex, i + 1, "active", "standalone", end, STAMP, STAMP))
        connection.exec_driver_sql("SELECT setval('student_id_seq', %s)" % (n + 1))
        connection.exec_driver_sql("SELECT setval('credential_id_seq', %s)" % (n + 1))
    _maintain(engine)


def _maintain(engine: Engine) -> None:
    """Outside the timings: fresh statistics and no dead rows from the previous measurement."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE credential, credential_event, audit_event")
    else:
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")


def _reset(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE credential SET state = 'active', ended_at = NULL, end_reason = NULL, updated_at = created_at "
            "WHERE state = 'expired'"
        )
        connection.exec_driver_sql("DELETE FROM credential_event")
        connection.exec_driver_sql("DELETE FROM audit_event")
    _maintain(engine)


def _timed(engine: Engine, work: Callable[[], object]) -> float:
    _reset(engine)
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _bare(engine: Engine, statements: list[str], today: date) -> Callable[[], object]:
    def run() -> None:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement), {"today": today, "now": STAMP})

    return run


def _run_sweep(ctx: AppContext, today: date) -> Callable[[], object]:
    def run() -> None:
        assert isinstance(ctx.clock, FixedClock)
        ctx.clock.set(datetime(today.year, today.month, today.day, 6, 0, tzinfo=UTC))
        sweep(ctx)

    return run


def measure(url: str, rows: int, batch_size: int | None, label: str, runs: int = 3) -> None:
    engine = make_engine(url)
    upgrade(engine)
    started = time.perf_counter()
    (_fill_postgres if engine.dialect.name == "postgresql" else _fill_sqlite)(engine, rows)
    print(f"[{label}] built {rows:,} students + credentials in {time.perf_counter() - started:.1f} s")
    with tempfile.TemporaryDirectory() as var:
        settings = load_settings(mode="production", secret_key=SECRET, database_url=url, var_dir=Path(var))
        if batch_size is not None:
            settings.jobs.batch_size = batch_size
        ctx = AppContext(settings=settings, engine=engine, clock=FixedClock(STAMP))
        used = settings.jobs.batch_size_for(engine.dialect.name)
        each: list[dict[str, float]] = []
        for _ in range(runs):
            each.append({
                "sweep 100%": _timed(engine, _run_sweep(ctx, ALL_DAY)),
                "bare 100%": _timed(engine, _bare(engine, [BARE], ALL_DAY)),
                "bare+rows 100%": _timed(engine, _bare(engine, BARE_ROWS, ALL_DAY)),
                "sweep 1%": _timed(engine, _run_sweep(ctx, ONE_PERCENT_DAY)),
                "bare 1%": _timed(engine, _bare(engine, [BARE], ONE_PERCENT_DAY)),
                "bare+rows 1%": _timed(engine, _bare(engine, BARE_ROWS, ONE_PERCENT_DAY)),
            })
    engine.dispose()

    def median(figure: Callable[[dict[str, float]], float], digits: int = 2) -> tuple[float, str]:
        values = [figure(r) for r in each]
        return statistics.median(values), ", ".join(f"{v:.{digits}f}" for v in values)

    print(f"[{label}] sweep batch size {used:,}; median of {runs} run(s), each run's figure in brackets")
    for name in each[0]:
        seconds, runs_text = median(lambda r, name=name: r[name], 3)  # type: ignore[misc]
        print(f"[{label}] {name:15} {seconds:8.3f} s   [{runs_text}]")
    full, full_runs = median(lambda r: r["sweep 100%"] / r["bare 100%"])
    one, one_runs = median(lambda r: r["sweep 1%"] / r["bare 1%"])
    print(f"[{label}] ratio sweep/bare       100%: {full:.2f} [{full_runs}] "
          + verdict(f"P3 sweep ({label}): sweep / bare UPDATE, 100% due", full, "<=", 2.0)
          + f"   1%: {one:.2f} [{one_runs}]")
    full_rows, _ = median(lambda r: r["sweep 100%"] / r["bare+rows 100%"])
    one_rows, _ = median(lambda r: r["sweep 1%"] / r["bare+rows 1%"])
    print(f"[{label}] ratio sweep/bare+rows  100%: {full_rows:.2f}   1%: {one_rows:.2f}")
    share, share_runs = median(lambda r: r["sweep 1%"] / r["sweep 100%"], 3)
    print(f"[{label}] ratio sweep 1%/100%: {share:.3f} [{share_runs}] "
          + verdict(f"P3 sweep ({label}): 1% due / 100% due", share, "<=", 0.05))


def _sqlite(rows: int, batch_size: int | None, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        measure(f"sqlite:///{Path(tmp) / 'bench.db'}", rows, batch_size, "sqlite", runs)


def _postgres(rows: int, batch_size: int | None, runs: int) -> None:
    admin = sa.create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1),
                             isolation_level="AUTOCOMMIT")
    name = f"mleg_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        measure(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", rows, batch_size, "postgres", runs)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="jobs.batch_size for the sweep (default: the product's for the database)")
    parser.add_argument("--runs", type=int, default=3, help="measurements of each figure; the median is compared")
    args, _ = parser.parse_known_args(argv)  # `python -m bench` passes every benchmark's options to each
    if args.db in ("sqlite", "both"):
        _sqlite(args.rows, args.batch_size, args.runs)
    if args.db in ("postgres", "both"):
        _postgres(args.rows, args.batch_size, args.runs)


if __name__ == "__main__":
    main()
