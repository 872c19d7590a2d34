"""Shared fixtures: settings, storage on SQLite and PostgreSQL, a FakeClock, the Bot API stand-in,
the support mailbox, the `mleg` CLI runner. Data builders live in tests/factories.py."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.app.settings import PROJECT_ROOT, Settings
from core.security.secrets_box import SecretBox
from core.storage.db import make_engine, upgrade
from core.support.faq import Faq
from tests.factories import TEST_SECRET, build_ctx, make_settings
from tests.servers.botapi import BotApiStandIn
from tests.servers.dovecot import DovecotServer
from tests.servers.smtp_relay import SmtpRelay
from tests.support.databases import POSTGRES_URL, in_ci, truncate_all
from tests.support.mail_desk import Desk, open_desk

pytest_plugins = ["tests.servers.fixtures"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `make test` the suite runs on two workers (pytest-xdist, `--dist loadgroup`): the slow
    runs (kill -9, outages, the browser, the installed wheel) go one after another on one worker,
    so two of them never load the two cores at once while they wait on their deadlines."""
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.xdist_group("slow"))


@pytest.fixture(autouse=True)
def _spawning_tests_are_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A test that starts a process (the `mleg` CLI, serve, the console, a browser) carries the
    `process` or `slow` mark, so `make test-fast` can leave the spawning tests out and stay a
    quick loop. The session's servers (Dovecot) start before this fixture and do not count."""
    spawned: list[str] = []
    real_init = subprocess.Popen.__init__

    def recording_init(self: subprocess.Popen[bytes], args: object, *rest: object, **options: object) -> None:
        spawned.append(str(args)[:120])
        real_init(self, args, *rest, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(subprocess.Popen, "__init__", recording_init)
    yield
    marked = any(request.node.get_closest_marker(name) for name in ("process", "slow"))
    if spawned and not marked:
        pytest.fail(f"this test starts a process ({spawned[0]}): mark it @pytest.mark.process", pytrace=False)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A CLI command run in-process (CliRunner) sets up logging on the runner's stderr, which is
    closed after the command: later records from any thread (the SMTP relay's) would meet a closed
    stream and print "Logging error" tracebacks into the run's output. Its handler goes again."""
    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in before and type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's MLEG_* variables or writes into the project's var/."""
    for key in list(os.environ):
        if key.startswith("MLEG_") and key != "MLEG_TEST_POSTGRES_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("MLEG_VAR_DIR", str(tmp_path / "var"))


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
        if in_ci():
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
    truncate_all(engine)
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


@pytest.fixture
def els_ctx(tmp_path: Path, sqlite_url: str, clock: FixedClock) -> Iterator[AppContext]:
    """Like `sqlite_ctx`, under the ELS policy (the credential lives as long as the ELS card)."""
    engine = make_engine(sqlite_url)
    yield build_ctx(make_settings(tmp_path, database_url=sqlite_url, policy="els"), engine, clock)
    engine.dispose()


@pytest.fixture(scope="module")
def faq() -> Faq:
    """The shipped FAQ (config/faq), its understanding trained once per module."""
    return Faq.load(PROJECT_ROOT / "config" / "faq")


# --- servers and front-ends -----------------------------------------------------------------

@pytest.fixture
def api() -> Iterator[BotApiStandIn]:
    """The local Bot API stand-in the real PTB Application talks to."""
    with BotApiStandIn() as standin:
        yield standin


@pytest.fixture
def desk(tmp_path: Path, sqlite_url: str, clock: FixedClock, dovecot: DovecotServer,
         smtp_server: SmtpRelay) -> Iterator[Desk]:
    """The support mailbox on the session's Dovecot, read by the real mail front-end."""
    opened = open_desk(tmp_path, sqlite_url, clock, dovecot, smtp_server)
    yield opened
    opened.ctx.engine.dispose()


@pytest.fixture
def runner(sqlite_ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """`mleg` in-process (typer's runner) on the same database and var/ as `sqlite_ctx`."""
    monkeypatch.setenv("MLEG_MODE", "production")
    monkeypatch.setenv("MLEG_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("MLEG_VAR_DIR", str(sqlite_ctx.settings.var_dir))
    monkeypatch.setenv("MLEG_DATABASE_URL", sqlite_ctx.settings.effective_database_url)
    return CliRunner()
