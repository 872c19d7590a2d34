"""Shared fixtures: settings, storage on SQLite and PostgreSQL, a FakeClock, factories."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.app.clock import FixedClock, RandomSource
from core.app.context import AppContext
from core.app.settings import Settings, load_settings
from core.security.secrets_box import SecretBox
from core.storage.db import make_engine, upgrade
from core.storage.models import Student
from core.students.demo_register import make_pesel
from core.students.pesel import mask_pesel

pytest_plugins = ["tests.servers.fixtures"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `make test` the suite runs on two workers (pytest-xdist, `--dist loadgroup`): the slow
    runs (kill -9, outages, the browser, the installed wheel) go one after another on one worker,
    so two of them never load the two cores at once while they wait on their deadlines."""
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.xdist_group("slow"))

TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
POSTGRES_URL = os.environ.get("MLEG_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
UNIVERSITY_DOMAIN = "student.example.edu.pl"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's MLEG_* variables or writes into the project's var/."""
    for key in list(os.environ):
        if key.startswith("MLEG_") and key != "MLEG_TEST_POSTGRES_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("MLEG_VAR_DIR", str(tmp_path / "var"))


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mode": "production",
        "secret_key": TEST_SECRET,
        "var_dir": tmp_path / "var",
        "database_url": f"sqlite:///{tmp_path / 'var' / 'test.db'}",
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 10, 5, 9, 0, tzinfo=UTC))


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(TEST_SECRET.encode())


# --- storage -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrate once, copy per test: the schema is the migrated one, not create_all."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A throw-away database for this run on the PostgreSQL server, migrated once."""
    admin = sa.create_engine(
        POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with admin.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        reason = f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}"
        if _in_ci():
            pytest.fail(reason + " (CI=true: storage must be tested on PostgreSQL)")
        pytest.skip(reason)
    name = f"mleg_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _truncate_all(engine: Engine) -> None:
    from sqlmodel import SQLModel

    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """Every storage test runs on both databases."""
    if request.param == "sqlite":
        target = tmp_path / "var" / "test.db"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sqlite_template, target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("postgres_database")
    engine = make_engine(url)
    _truncate_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    target = tmp_path / "var" / "test.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(sqlite_template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


class SeededRandom(RandomSource):
    """Reproducible codes for tests."""

    def __init__(self, seed: int = 7) -> None:
        import random

        rng = random.Random(seed)
        super().__init__(choice=rng.choice)


def build_ctx(settings: Settings, engine: Engine, clock: FixedClock) -> AppContext:
    return AppContext(settings=settings, engine=engine, clock=clock, random=SeededRandom())


@pytest.fixture
def ctx(tmp_path: Path, db_url: str, clock: FixedClock) -> Iterator[AppContext]:
    settings = make_settings(tmp_path, database_url=db_url)
    engine = make_engine(db_url)
    yield build_ctx(settings, engine, clock)
    engine.dispose()


@pytest.fixture
def sqlite_ctx(tmp_path: Path, sqlite_url: str, clock: FixedClock) -> Iterator[AppContext]:
    """For behaviour tests whose storage is not the point: SQLite only."""
    settings = make_settings(tmp_path, database_url=sqlite_url)
    engine = make_engine(sqlite_url)
    yield build_ctx(settings, engine, clock)
    engine.dispose()


# --- factories ---------------------------------------------------------------------------

_counter = iter(range(1, 10**6))


def student_pesel(n: int, female: bool = False) -> str:
    """A valid, generated PESEL; `n` makes it distinct."""
    return make_pesel(date(2001, 1, 1 + n % 28), serial=100 + n, female=female)


def add_student(session: Session, box: SecretBox, **overrides: Any) -> tuple[Student, str]:
    """Insert a student; returns it with its clear (generated) PESEL for the test to type."""
    n = next(_counter)
    pesel = overrides.pop("pesel", student_pesel(n))
    now = datetime(2026, 9, 1, tzinfo=UTC)
    values: dict[str, Any] = {
        "album": str(500000 + n),
        "first_name": "Anna",
        "last_name": "Testowa",
        "email": f"anna.testowa.{n}@{UNIVERSITY_DOMAIN}",
        "study_level": "first_cycle",
        "status": "active",
        "els_number": f"ELS-{n:08d}",
        "els_valid_until": date(2027, 3, 31),
        "removed_on": None,
        "row_digest": "x",
        "created_at": now,
        "updated_at": now,
    }
    values.update(overrides)
    if pesel:
        values.setdefault("pesel_hash", box.pesel_hash(pesel))
        values.setdefault("pesel_masked", mask_pesel(pesel))
    student = Student(**values)
    session.add(student)
    session.flush()
    return student, pesel
