"""Which database errors are temporary: worth trying the same unit of work again.

A lost connection (a server restart, a failover, an administrator ending sessions), a
serialization failure, a deadlock, a lock wait that timed out, a busy SQLite file: none of
them says anything about the data being processed, and the same work usually succeeds a
moment later. Everything else (a constraint, a bad value, a bug) would fail the same way again.
"""

from __future__ import annotations

import sqlite3

import psycopg
from sqlalchemy import exc as sa_exc

__all__ = ["is_transient"]

# PostgreSQL SQLSTATEs (Appendix A of its manual) that a retry can get past.
_TRANSIENT_SQLSTATES = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available (lock_timeout, NOWAIT)
    "57P01",  # admin_shutdown (pg_terminate_backend, a fast shutdown)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up, in recovery)
    "53300",  # too_many_connections
})
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


def _sqlstate_is_transient(sqlstate: str) -> bool:
    return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")  # class 08: connection exception


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is a temporary database condition rather than the work's own fault."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection free in time
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return is_transient(exc.orig) if isinstance(exc.orig, BaseException) else False
    if isinstance(exc, psycopg.Error):
        if exc.sqlstate:
            return _sqlstate_is_transient(exc.sqlstate)
        # No SQLSTATE: the error came from the client library, not the server (the socket
        # closed, the server went away mid-query).
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    if isinstance(exc, sqlite3.OperationalError):
        return str(exc).lower().startswith(_SQLITE_BUSY)
    return False
