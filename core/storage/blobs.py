"""Big binary values (a 25 MB support mail) written and read without whole copies in the driver.

Bound as a parameter, a blob is copied by the sqlite3 module and again by SQLite while it
builds the row, and read back it is copied twice more: about four times its size in
resident memory for one mail. SQLite's incremental blob I/O avoids that: the row is
inserted with a zero-filled blob of the right length (kept as a length, not bytes, when
the blob is the row's last column), then written in pieces, and read back into one
buffer. Other databases get the value as a plain parameter.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

__all__ = ["CHUNK_BYTES", "insert_blob", "read_blob"]

CHUNK_BYTES = 1024 * 1024


def _key(column: sa.Column[Any]) -> sa.Column[Any]:
    """The table's integer primary key: SQLite's rowid, which blobopen addresses rows by."""
    (key,) = column.table.primary_key.columns
    return key


def _sqlite_driver(connection: sa.Connection) -> Any | None:
    if connection.dialect.name != "sqlite":
        return None
    return connection.connection.dbapi_connection


def insert_blob(session: Session, column: sa.Column[bytes], row_id: int,
                data: bytes | bytearray | memoryview) -> None:
    """Insert the row `row_id` of `column`'s table with `data` in `column`, in the session's
    transaction. The table's other columns must have defaults; `column` should be its last."""
    table, key = column.table, _key(column)
    connection = session.connection()
    sqlite = _sqlite_driver(connection)
    if sqlite is None:
        value = data if isinstance(data, bytes) else bytes(data)
        connection.execute(sa.insert(table).values({key.name: row_id, column.name: value}))
        return
    connection.execute(sa.insert(table).values({key.name: row_id, column.name: sa.func.zeroblob(len(data))}))
    view = memoryview(data).cast("B")
    with sqlite.blobopen(table.name, column.name, row_id) as blob:
        for start in range(0, len(view), CHUNK_BYTES):
            blob.write(view[start:start + CHUNK_BYTES])


@functools.cache
def _reads(column: sa.Column[bytes]) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The type of `column`'s value and the value, in the row `:row_id`: built once per column
    (the parse worker reads every mail through them; building them cost more than running them)."""
    key = _key(column)
    where = key == sa.bindparam("row_id")
    return sa.select(sa.func.typeof(column)).where(where), sa.select(column).where(where)


def read_blob(session: Session | sa.Connection, column: sa.Column[bytes], row_id: int) -> bytes | None:
    """The value of `column` in the row `row_id`; None for NULL or no such row."""
    connection = session if isinstance(session, sa.Connection) else session.connection()
    type_of, value_of = _reads(column)
    sqlite = _sqlite_driver(connection)
    if sqlite is not None:
        kind = connection.execute(type_of, {"row_id": row_id}).scalar()
        if kind == "blob":
            with sqlite.blobopen(column.table.name, column.name, row_id, readonly=True) as blob:
                data: bytes = blob.read()
            return data
    # NULL, no row, or not SQLite: blobopen could not open those anyway.
    value = connection.execute(value_of, {"row_id": row_id}).scalar()
    return None if value is None else bytes(value)
