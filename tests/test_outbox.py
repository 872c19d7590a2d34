"""The outbox: idempotent enqueue, encrypted bodies wiped once sent, retries, leases."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, select

from core.app.context import AppContext
from core.messaging import outbox, sending
from core.messaging.outgoing import Attachment, Button, OutgoingMessage
from core.storage.db import unit_of_work
from core.storage.models import OutboxMessage, OutboxStatus


def _enqueue(ctx: AppContext, key: str = "k1", text: str = "Kod: SECRET-CODE") -> int:
    with unit_of_work(ctx.engine) as session:
        row = outbox.enqueue(
            session, ctx.box, key=key, channel="email", recipient="a@student.example.edu.pl",
            kind="test", message=OutgoingMessage(
                text=text, subject="S", attachments=[Attachment("a.png", "image/png", b"\x89PNG", "c1")],
                buttons=[[Button("OK", "ok")]]),
            now=ctx.clock.now(),
        )
        session.flush()
        return row.id or 0


def test_same_key_is_queued_once(ctx: AppContext) -> None:
    first = _enqueue(ctx)
    second = _enqueue(ctx, text="different")
    assert first == second
    with Session(ctx.engine) as session:
        assert len(session.exec(select(OutboxMessage)).all()) == 1



def test_a_batch_under_lock_queues_each_key_once(ctx: AppContext) -> None:
    """A turn replayed (the same update delivered again) queues nothing new; new keys still go."""
    def queue(*pairs: tuple[str, str]) -> None:
        with unit_of_work(ctx.engine) as session:
            outbox.enqueue_under_lock(session, ctx.box, [(key, OutgoingMessage(text=text)) for key, text in pairs],
                                      channel="telegram", recipient="42", kind="chat-reply", now=ctx.clock.now())

    queue(("r:1:0", "first"), ("r:1:1", "second"))
    queue(("r:1:0", "first again"), ("r:1:1", "second again"), ("r:2:0", "third"))
    with Session(ctx.engine) as session:
        rows = session.exec(select(OutboxMessage).order_by(OutboxMessage.id)).all()  # type: ignore[arg-type]
    assert [(r.idempotency_key, outbox.open_body(ctx.box, r).text) for r in rows] == [
        ("r:1:0", "first"), ("r:1:1", "second"), ("r:2:0", "third")]
    assert all(r.status == OutboxStatus.PENDING and r.attempts == 0 for r in rows)

def test_body_is_encrypted_and_round_trips(ctx: AppContext) -> None:
    row_id = _enqueue(ctx)
    with Session(ctx.engine) as session:
        row = session.get(OutboxMessage, row_id)
        assert row is not None and row.body is not None
        assert b"SECRET-CODE" not in row.body
        message = outbox.open_body(ctx.box, row)
    assert message.text == "Kod: SECRET-CODE"
    assert message.attachments[0].content == b"\x89PNG"
    assert message.buttons[0][0].data == "ok"


async def test_drain_marks_sent_and_wipes_body(ctx: AppContext) -> None:
    row_id = _enqueue(ctx)
    seen: list[str] = []

    async def deliver(row: OutboxMessage, message: OutgoingMessage) -> sending.DeliveryResult:
        seen.append(message.text)
        return sending.DeliveryResult(ok=True, external_id="<id@x>")

    assert await sending.drain_once(ctx.engine, ctx.box, channel="email", now=ctx.clock.now, deliver=deliver) == 1
    assert await sending.drain_once(ctx.engine, ctx.box, channel="email", now=ctx.clock.now, deliver=deliver) == 0
    assert seen == ["Kod: SECRET-CODE"]
    with Session(ctx.engine) as session:
        row = session.get(OutboxMessage, row_id)
        assert row is not None
        assert (row.status, row.body, row.external_id) == (OutboxStatus.SENT, None, "<id@x>")


async def test_temporary_failure_backs_off_then_succeeds(ctx: AppContext) -> None:
    row_id = _enqueue(ctx)
    results = [sending.DeliveryResult(ok=False, error="451 try later"), sending.DeliveryResult(ok=True)]

    async def deliver(row: OutboxMessage, message: OutgoingMessage) -> sending.DeliveryResult:
        return results.pop(0)

    await sending.drain_once(ctx.engine, ctx.box, channel="email", now=ctx.clock.now, deliver=deliver)
    with Session(ctx.engine) as session:
        row = session.get(OutboxMessage, row_id)
        assert row is not None
        assert row.status == OutboxStatus.PENDING and row.last_error == "451 try later"
        assert row.next_attempt_at > ctx.clock.now()
    # Not due yet: nothing happens.
    assert await sending.drain_once(ctx.engine, ctx.box, channel="email", now=ctx.clock.now, deliver=deliver) == 0
    ctx.clock.advance(minutes=1)  # type: ignore[attr-defined]
    assert await sending.drain_once(ctx.engine, ctx.box, channel="email", now=ctx.clock.now, deliver=deliver) == 1


async def test_permanent_failure_is_kept_for_staff(ctx: AppContext) -> None:
    row_id = _enqueue(ctx)

    async def deliver(row: OutboxMessage, message: OutgoingMessage) -> sending.DeliveryResult:
        return sending.DeliveryResult(ok=False, error="550 no such user", permanent=True)

    await sending.drain_once(ctx.engine, ctx.box, channel="email", now=ctx.clock.now, deliver=deliver)
    with Session(ctx.engine) as session:
        row = session.get(OutboxMessage, row_id)
        assert row is not None
        assert (row.status, row.last_error, row.body) == (OutboxStatus.FAILED, "550 no such user", None)


async def test_crashed_sender_lease_expires_and_row_is_retried(ctx: AppContext) -> None:
    row_id = _enqueue(ctx)
    with unit_of_work(ctx.engine) as session:
        claimed = sending.claim_due(session, channel="email", now=ctx.clock.now())
        assert [r.id for r in claimed] == [row_id]
    # The sender died here. Before the lease ends, nobody else takes it.
    with unit_of_work(ctx.engine) as session:
        assert sending.claim_due(session, channel="email", now=ctx.clock.now()) == []
    ctx.clock.advance(sending.LEASE + timedelta(seconds=1))  # type: ignore[attr-defined]
    with unit_of_work(ctx.engine) as session:
        assert [r.id for r in sending.claim_due(session, channel="email", now=ctx.clock.now())] == [row_id]


async def test_exception_in_sender_is_a_temporary_failure(ctx: AppContext) -> None:
    row_id = _enqueue(ctx)

    async def deliver(row: OutboxMessage, message: OutgoingMessage) -> sending.DeliveryResult:
        raise ConnectionRefusedError("server down")

    await sending.drain_once(ctx.engine, ctx.box, channel="email", now=ctx.clock.now, deliver=deliver)
    with Session(ctx.engine) as session:
        row = session.get(OutboxMessage, row_id)
        assert row is not None
        assert row.status == OutboxStatus.PENDING and "server down" in (row.last_error or "")


def test_released_claims_are_due_again_as_never_tried(ctx: AppContext) -> None:
    """What `mleg serve` claimed but never started when it stopped goes back, no attempt spent."""
    ids = [_enqueue(ctx, key=f"r{i}") for i in range(3)]
    claimed = sending.claim(ctx.engine, channel="email", now=ctx.clock.now())
    assert sorted(r.id for r in claimed) == ids
    sending.release(ctx.engine, [r for r in claimed if r.id in ids[1:]])
    with Session(ctx.engine) as session:
        rows = {r.id: r for r in session.exec(select(OutboxMessage)).all()}
    assert rows[ids[0]].status == OutboxStatus.SENDING
    assert [(rows[i].status, rows[i].attempts, rows[i].lease_until) for i in ids[1:]] == [
        (OutboxStatus.PENDING, 0, None)] * 2
    assert sorted(r.id for r in sending.claim(ctx.engine, channel="email", now=ctx.clock.now())) == ids[1:]
