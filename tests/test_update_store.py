"""core.storage.update_store on SQLite and PostgreSQL: stored once, encrypted, marked in the turn's commit."""

from __future__ import annotations

import json
from datetime import timedelta
from unittest import mock

import pytest
from sqlmodel import Session, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.conversation import ConversationService, Event
from core.conversation import runner as conversation_runner
from core.jobs.retention import retention
from core.storage import update_store
from core.storage.models import StoredUpdate
from tests.factories import student_pesel


def _store(ctx: AppContext, update_id: int, text: str = "/start") -> bool:
    raw = json.dumps({"update_id": update_id, "message": {"text": text}}).encode()
    return update_store.store(ctx.engine, ctx.box, channel="telegram", update_id=update_id, raw=raw,
                              now=ctx.clock.now())


def _rows(ctx: AppContext) -> list[StoredUpdate]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(StoredUpdate).order_by(StoredUpdate.update_id)).all())


def test_stored_once_by_update_id_encrypted_and_in_update_order(ctx: AppContext) -> None:
    pesel = student_pesel(3)
    assert _store(ctx, 12, pesel) and _store(ctx, 10) and _store(ctx, 11)
    assert not _store(ctx, 12, "a retry")  # Telegram's retry of an update changes nothing
    rows = _rows(ctx)
    assert [r.update_id for r in rows] == [10, 11, 12]
    assert all(r.payload and pesel.encode() not in r.payload and b"update_id" not in r.payload for r in rows)
    waiting = update_store.waiting(ctx.engine, channel="telegram", limit=2)
    assert [w.update_id for w in waiting] == [10, 11]
    assert json.loads(ctx.box.decrypt(rows[2].payload or b""))["message"]["text"] == pesel


def test_the_turn_marks_its_update_in_its_own_commit(ctx: AppContext) -> None:
    """Handled and wiped with the turn; a turn that fails leaves the update waiting, payload intact."""
    service = ConversationService(ctx)
    _store(ctx, 20)
    _store(ctx, 21)
    first, second = update_store.waiting(ctx.engine, channel="telegram", limit=10)
    event = Event.text_message("telegram", "901", "/start", event_id="tg:20")
    assert service.handle(event, queue_channel="telegram", stored_update=first.row_id)
    with mock.patch.object(conversation_runner, "step", side_effect=RuntimeError("boom")), \
            pytest.raises(RuntimeError):
        service.handle(Event.text_message("telegram", "902", "/start", event_id="tg:21"),
                       queue_channel="telegram", stored_update=second.row_id)
    handled, waiting = _rows(ctx)
    assert handled.handled_at is not None and handled.payload is None
    assert waiting.handled_at is None and waiting.payload is not None
    assert [w.update_id for w in update_store.waiting(ctx.engine, channel="telegram", limit=10)] == [21]


def test_retention_keeps_waiting_updates_and_ends_handled_ones(ctx: AppContext, clock: FixedClock) -> None:
    _store(ctx, 30)
    _store(ctx, 31)
    first = update_store.waiting(ctx.engine, channel="telegram", limit=1)[0]
    with Session(ctx.engine) as session:
        update_store.mark_handled(session, first.row_id, clock.now())
        session.commit()
    clock.advance(update_store.HANDLED_KEEP - timedelta(minutes=1))
    retention(ctx)
    assert [r.update_id for r in _rows(ctx)] == [30, 31]  # a late retry of 30 is still recognised
    clock.advance(timedelta(minutes=2))
    assert retention(ctx)["stored_updates"] == 1
    assert [r.update_id for r in _rows(ctx)] == [31]  # waiting: work still to do, never dropped
    assert not _store(ctx, 31)
