"""Benchmark: `mleg registry import` of a large register, next to a bare CSV read + INSERT baseline.

Run: `.venv/bin/python -m bench.register_import [--students 50000] [--db sqlite|postgres|both]`.
Prints absolute times and the ratio to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import io
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.db import make_engine, unit_of_work, upgrade
from core.demo_register import DEMO_DOMAIN, generate_rows, rows_to_csv
from core.register import import_register, parse_register
from core.secrets_box import SecretBox

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def _database(kind: str) -> Iterator[Engine]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
            upgrade(engine)
            yield engine
            engine.dispose()
        return
    admin = sa.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"mleg_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(f"postgresql://postgres@127.0.0.1:5432/{name}")
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _baseline(engine: Engine, data: bytes) -> float:
    """What any import must do at least: read the CSV and INSERT the rows, no checks."""
    started = time.perf_counter()
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM student"))
        connection.execute(
            sa.text(
                "INSERT INTO student (album, pesel_hash, first_name, last_name, email, study_level, status, "
                "row_digest, created_at, updated_at) VALUES (:album, :pesel, :first_name, :last_name, :email, "
                ":study_level, :status, '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            [{**r, "pesel": r["pesel"] or None} for r in rows],
        )
        connection.execute(sa.text("DELETE FROM student"))
    return time.perf_counter() - started


def _import(engine: Engine, data: bytes, box: SecretBox) -> float:
    from datetime import UTC, date, datetime

    started = time.perf_counter()
    rows = parse_register(data, box=box, email_domains=[DEMO_DOMAIN])
    with unit_of_work(engine) as session:
        import_register(session, rows, now=datetime.now(UTC), today=date.today(), sync=True)
    return time.perf_counter() - started


def run(kind: str, students: int) -> None:
    data = rows_to_csv(generate_rows(students, seed=11)).encode()
    box = SecretBox(b"bench-secret-" * 4)
    with _database(kind) as engine:
        baseline = _baseline(engine, data)
        first = _import(engine, data, box)
        again = _import(engine, data, box)  # a sync with nothing changed
    print(f"register import, {students} students, {kind}:")
    print(f"  baseline (csv read + bare INSERT)   {baseline:7.2f} s")
    print(f"  mleg registry import (new register) {first:7.2f} s   ratio {first / baseline:5.2f}x")
    print(f"  mleg registry import --sync (same)  {again:7.2f} s   ratio {again / baseline:5.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=50_000)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    args, _ = parser.parse_known_args(argv)
    for kind in (["sqlite", "postgres"] if args.db == "both" else [args.db]):
        run(kind, args.students)


if __name__ == "__main__":
    main()
