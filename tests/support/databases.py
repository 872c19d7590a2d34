"""The PostgreSQL server the suite runs its storage tests on, and emptying a database between tests."""

from __future__ import annotations

import os

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

POSTGRES_URL = os.environ.get("MLEG_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def in_ci() -> bool:
    """In CI a missing server must fail the run, not hide as a skip."""
    return os.environ.get("CI", "").lower() == "true"


def truncate_all(engine: Engine) -> None:
    """Every table emptied, identities restarted (PostgreSQL)."""
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
