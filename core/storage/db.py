"""Storage: the engine, sessions (one unit of work per event) and migrations."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

__all__ = ["alembic_config", "checkpoint_wal", "lock_for_write", "make_engine", "unit_of_work", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


SQLITE_BUSY_TIMEOUT_MS = 10_000
# How long a WAL checkpoint waits for readers to leave the WAL. Short: it runs on the mail
# reader's turn, and one that gives up is simply tried again at the next batch.
WAL_CHECKPOINT_WAIT_MS = 1_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the console, the bot and the jobs read while one of them writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # FULL: a commit is on disk before we tell the peer (Telegram's offset, the IMAP flag, the
    # student's reply). NORMAL keeps WAL commits safe from kill -9 but lets a power cut take the
    # last of them back, after the peer was told. One fsync a commit (20 -> 160 us here).
    cursor.execute("PRAGMA synchronous=FULL")
    # Deleted rows (raw mail, retention, a wiped outbox body) overwritten, not left in free
    # pages: many builds (Debian's) have it on already, not all.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


# busy_timeout, and how long a writer waits for another thread of this process.
SQLITE_LOCK_TIMEOUT_SECONDS = 30.0
# libpq waits forever for a server that drops packets (a firewall); every command would hang.
PG_CONNECT_TIMEOUT_SECONDS = 10
_writer_locks: dict[str, threading.Lock] = {}
_writer_locks_guard = threading.Lock()


def _writer_lock(database: str) -> threading.Lock:
    with _writer_locks_guard:
        return _writer_locks.setdefault(str(Path(database).resolve()), threading.Lock())


class _SQLiteConnection(sqlite3.Connection):
    """A sqlite3 connection whose write transactions queue on one lock per file and process.

    SQLite makes a writer that finds the database locked sleep and poll (1, 2, 5, 10 ...
    up to 100 ms a nap), so threads of one process taking turns at the write lock spent
    more time asleep than writing. Waiting on a threading.Lock instead hands the turn over
    the moment the holder commits. Other processes still meet at SQLite's own lock.
    """

    def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        self.writer_lock = _writer_lock(database) if database != ":memory:" else threading.Lock()
        self.holds_writer_lock = False

    def begin_immediate(self) -> None:
        if not self.writer_lock.acquire(timeout=SQLITE_LOCK_TIMEOUT_SECONDS):
            raise sqlite3.OperationalError("database is locked (another thread of this process kept writing)")
        self.holds_writer_lock = True
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._release()
            raise

    def _release(self, *, closing: bool = False) -> None:
        if self.holds_writer_lock and (closing or not self.in_transaction):
            self.holds_writer_lock = False
            self.writer_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release(closing=True)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """One engine per process, built in the entry point."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": SQLITE_LOCK_TIMEOUT_SECONDS, "factory": _SQLiteConnection}
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if "connect_timeout=" not in url:  # the URL's own value wins
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_SECONDS, **kwargs.get("connect_args", {})}
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


def lock_for_write(session: Session | Connection) -> None:
    """On SQLite, take the database's write lock now, at the start of a read-then-write unit.

    SQLite's default (deferred) transaction reads from a snapshot and asks for the write
    lock only at its first write; if another connection committed in between, that write
    fails at once with "database is locked" (SQLITE_BUSY_SNAPSHOT), which busy_timeout
    cannot wait out. BEGIN IMMEDIATE waits its turn (busy_timeout) before reading instead.
    PostgreSQL needs nothing here: its units lock the rows they read (FOR UPDATE).
    """
    connection = session if isinstance(session, Connection) else session.connection()
    if connection.dialect.name != "sqlite":
        return
    raw = connection.connection.dbapi_connection
    if raw is None or raw.in_transaction:
        return
    if isinstance(raw, _SQLiteConnection):
        raw.begin_immediate()
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def checkpoint_wal(engine: Engine, *, wait_ms: int = WAL_CHECKPOINT_WAIT_MS) -> bool:
    """On SQLite, move the WAL into the database file and truncate the WAL to zero bytes.

    A deleted row's bytes outlive the DELETE in the WAL: every version of a changed page is
    appended there, the one that held the row included, and stays until the WAL is reset
    (and secure_delete zeroes only the newest version). A checkpoint that cannot reset the
    WAL (a reader still in it after `wait_ms`) returns False; call again later. True, and
    nothing done, on other databases.
    """
    if engine.dialect.name != "sqlite":
        return True
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        # This process's writers queue on their lock (as for any write) rather than in
        # SQLite's busy loop, which the checkpoint would otherwise keep them in.
        lock: threading.Lock | None = getattr(raw, "writer_lock", None)
        if lock is not None and not lock.acquire(timeout=SQLITE_LOCK_TIMEOUT_SECONDS):
            return False
        try:
            raw.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
            try:
                busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.OperationalError:
                busy = 1  # locked out by another process's writer: the same as busy, try later
            finally:
                raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            if lock is not None:
                lock.release()
    return not busy


@contextmanager
def unit_of_work(engine: Engine) -> Iterator[Session]:
    """A session committed once at the end, rolled back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision` (idempotent)."""
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
