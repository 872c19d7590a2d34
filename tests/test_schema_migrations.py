"""The migrations produce exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

import core.storage.models  # noqa: F401
from core.storage.db import alembic_config, make_engine, upgrade
from core.storage.models import InboundMail
from mail.stored import stored_raw
from tests.support.databases import POSTGRES_URL

NOW = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)


def test_models_match_migrations(engine: Engine) -> None:
    upgrade(engine)  # idempotent on an upgraded database
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == [], f"models and migrations differ; run scripts/new-migration.py: {diff}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own: this test migrates down and up, which shared ones must not see."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    request.getfixturevalue("postgres_database")  # skips (or fails in CI) without a server
    name = f"mleg_migrate_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_raw_mail_moves_to_its_own_table_and_back(fresh_url: str) -> None:
    """0002 copies every stored mail's bytes to inbound_mail_raw; its downgrade copies them back."""
    engine = make_engine(fresh_url)
    try:
        upgrade(engine, "0001")
        mail = b"From: a@student.example.edu.pl\r\n\r\nKod nie dziala\r\n"
        with engine.begin() as connection:
            connection.execute(sa.text(
                "INSERT INTO inbound_mail (mailbox, uidvalidity, uid, digest, size, raw, status, received_at) "
                "VALUES ('INBOX', 1, 7, 'd7', :size, :raw, 'new', :at)"), {"size": len(mail), "raw": mail, "at": NOW})
        upgrade(engine)
        with Session(engine) as session:
            inbound_id = session.exec(select(InboundMail.id)).one()
            assert inbound_id is not None and stored_raw(session, inbound_id) == mail
        command.downgrade(alembic_config(engine), "0001")
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT raw FROM inbound_mail")).scalar_one() == mail
    finally:
        engine.dispose()
