"""The outbox claim reads only due rows, through ix_outbox_due, however many sent rows the table holds.

Its OR of "pending and due" and "sending with a lapsed lease" made SQLite search the
channel's index instead: every row the channel ever had, read on every claim.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from core.app.context import AppContext
from core.messaging import outbox, sending
from core.messaging.outgoing import OutgoingMessage
from core.storage.db import unit_of_work


def test_the_claim_searches_the_due_index_not_the_whole_channel(ctx: AppContext) -> None:
    if ctx.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's query plan (PostgreSQL plans by its statistics)")
    with unit_of_work(ctx.engine) as session:
        outbox.enqueue_under_lock(session, ctx.box, [(f"k{i}", OutgoingMessage(text="hi")) for i in range(3)],
                                  channel="telegram", recipient="42", kind="chat-reply", now=ctx.clock.now())
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM outbox" in statement:
            statements.append((statement, parameters))

    sa.event.listen(ctx.engine, "before_cursor_execute", seen)
    try:
        claimed = sending.claim(ctx.engine, channel="telegram", now=ctx.clock.now(), limit=10)
    finally:
        sa.event.remove(ctx.engine, "before_cursor_execute", seen)
    assert len(claimed) == 3
    (statement, parameters), = statements
    with ctx.engine.connect() as connection:
        plan = [row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]
    searches = [step for step in plan if step.startswith(("SEARCH outbox", "SCAN outbox"))]
    assert searches and all("ix_outbox_due" in step or "PRIMARY KEY" in step for step in searches), plan
