"""Who runs the lifecycle jobs when several `mleg serve` share one PostgreSQL: an advisory lock.

The leader holds a session-level `pg_try_advisory_lock` on a connection of its own for as long
as it leads; followers try again now and then. If the leader dies, or its connection does,
PostgreSQL drops the lock and the next follower to try takes over. A hand-over can overlap
a job that is still finishing: the work is safe to overlap (row locks with SKIP LOCKED, state
conditions in the UPDATEs, the unique reminder ledger), the lock only keeps it from being
done twice over for nothing. APScheduler's job stores are not shared (3.x cannot), each
process has its own in memory; the lock decides whose jobs do anything.

SQLite is one process by design: there the holder is always the leader.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = ["LIFECYCLE_LOCK", "TELEGRAM_POLLING_LOCK", "TELEGRAM_UPDATES_LOCK", "Leadership", "advisory_key"]

log = logging.getLogger(__name__)

LIFECYCLE_LOCK = "mleg:lifecycle-jobs"
# Every advisory lock the servers of one database share is named here. The one the Telegram front-end holds
# while it long-polls: Telegram allows one getUpdates per token, so of several servers on one
# database one polls and the others only send.
TELEGRAM_POLLING_LOCK = "mleg:telegram-polling"
# In webhook mode every server stores the updates that reach it and the holder of this lock
# handles them all (bot.webhook): one chat's turns never run on two servers at once.
TELEGRAM_UPDATES_LOCK = "mleg:telegram-updates"


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock, from a readable name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Leadership:
    """`try_acquire()` is cheap to call often: it also notices a lost connection (= lost lock)."""

    def __init__(self, engine: Engine, name: str = LIFECYCLE_LOCK, purpose: str = "lifecycle jobs") -> None:
        self._engine = engine
        self._key = advisory_key(name)
        self._purpose = purpose
        self._connection: Connection | None = None
        self._single = engine.dialect.name != "postgresql"

    @property
    def held(self) -> bool:
        return self._single or self._connection is not None

    def try_acquire(self) -> bool:
        if self._single:
            return True
        if self._connection is not None:
            try:
                self._connection.execute(sa.text("SELECT 1"))
                return True
            except sa.exc.DBAPIError:
                log.warning("lost the connection holding the %s lock; trying to take it again", self._purpose)
                self._drop()
        connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = bool(connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}).scalar())
        except Exception:
            connection.close()
            raise
        if not got:
            connection.close()
            return False
        self._connection = connection
        log.info("took the %s lock: this process does that work", self._purpose)
        return True

    def release(self) -> None:
        if self._connection is None:
            return
        # A connection that is gone took the lock with it: nothing to unlock then.
        with contextlib.suppress(sa.exc.DBAPIError):
            self._connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
        self._drop()
        log.info("released the %s lock", self._purpose)

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.invalidate()  # never hand a lock-holding connection back to the pool
            finally:
                connection.close()
