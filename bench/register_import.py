"""Benchmark: `mleg registry import` of a large register, next to a bare CSV read + INSERT baseline.

Run: `.venv/bin/python -m bench.register_import [--students 50000] [--db sqlite|postgres|both]`.

The product is run as a user runs it: `mleg registry import FILE.csv` (then `--sync` with the
same file: nothing changed), a process of its own on a migrated database, timed from start to
exit. The start of a `mleg` process (the interpreter and the imports, no database work:
`mleg --help`) is timed too and printed beside it. The baseline times only what any import
must do at least (read the CSV, INSERT the rows, commit); emptying the table for the next
step is not timed. Prints absolute times and the ratios to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.app.settings import PROJECT_ROOT
from core.storage.db import make_engine, upgrade
from core.students.demo_register import DEMO_DOMAIN, generate_rows, rows_to_csv

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SECRET = "bench-secret-key-long-enough-0123456789-abcdef"


@contextmanager
def _database(kind: str) -> Iterator[tuple[Engine, str]]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            engine = make_engine(url)
            upgrade(engine)
            yield engine, url
            engine.dispose()
        return
    admin = sa.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"mleg_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        yield engine, url
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
        connection.execute(
            sa.text(
                "INSERT INTO student (album, pesel_hash, first_name, last_name, email, study_level, status, "
                "row_digest, created_at, updated_at) VALUES (:album, :pesel, :first_name, :last_name, :email, "
                ":study_level, :status, '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            [{**r, "pesel": r["pesel"] or None} for r in rows],
        )
    elapsed = time.perf_counter() - started
    with engine.begin() as connection:  # the next step starts from an empty register: not timed
        connection.execute(sa.text("DELETE FROM student"))
    return elapsed


def _mleg(args: list[str], url: str, var: Path) -> float:
    """`mleg ARGS` as a user runs it, timed from the process's start to its exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLEG_")} | {
        "MLEG_MODE": "production", "MLEG_SECRET_KEY": SECRET, "MLEG_DATABASE_URL": url,
        "MLEG_VAR_DIR": str(var), "MLEG_UNIVERSITY__EMAIL_DOMAINS": DEMO_DOMAIN,
    }
    mleg = Path(sys.executable).with_name("mleg")
    command = [str(mleg)] if mleg.exists() else [sys.executable, "-m", "core.cli"]
    started = time.perf_counter()
    result = subprocess.run([*command, *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"mleg {' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return elapsed


def run(kind: str, students: int) -> None:
    data = rows_to_csv(generate_rows(students, seed=11)).encode()
    with tempfile.TemporaryDirectory() as tmp, _database(kind) as (engine, url):
        register = Path(tmp) / "register.csv"
        register.write_bytes(data)
        baseline = _baseline(engine, data)
        start = _mleg(["--help"], url, Path(tmp) / "var")
        first = _mleg(["registry", "import", str(register)], url, Path(tmp) / "var")
        again = _mleg(["registry", "import", "--sync", str(register)], url, Path(tmp) / "var")  # nothing changed
        with engine.connect() as connection:
            imported = connection.execute(sa.text("SELECT count(*) FROM student")).scalar_one()
        if imported != students:
            raise RuntimeError(f"{imported} students in the database after importing {students}")
    print(f"register import, {students} students, {kind}:")
    print(f"  baseline (csv read + bare INSERT)   {baseline:7.2f} s")
    print(f"  mleg registry import (new register) {first:7.2f} s   ratio {first / baseline:5.2f}x")
    print(f"  mleg registry import --sync (same)  {again:7.2f} s   ratio {again / baseline:5.2f}x")
    print(f"  of each, starting mleg (--help)     {start:7.2f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=50_000)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    args, _ = parser.parse_known_args(argv)
    for kind in (["sqlite", "postgres"] if args.db == "both" else [args.db]):
        run(kind, args.students)


if __name__ == "__main__":
    main()
