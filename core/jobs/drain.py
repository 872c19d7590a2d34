"""The outbox drainer: every channel that has a sender plugin, paced by the sender's rate."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import sqlalchemy as sa
from sqlmodel import Session, col

from core.app.context import AppContext
from core.app.plugins import ChannelSender, load_channels
from core.messaging.delivery_alerts import reporter_for
from core.messaging.outgoing import OutgoingMessage
from core.messaging.sending import DeliveryResult, drain_once
from core.storage.models import OutboxMessage, OutboxStatus

__all__ = ["drain_all", "waiting_channels"]

log = logging.getLogger(__name__)
_warned: set[str] = set()  # said once per process, not every few seconds


def waiting_channels(ctx: AppContext) -> set[str]:
    """Channels with rows waiting to go (pending or leased)."""
    with Session(ctx.engine) as session:
        return set(
            session.execute(
                sa.select(col(OutboxMessage.channel))
                .where(col(OutboxMessage.status).in_([OutboxStatus.PENDING, OutboxStatus.SENDING]))
                .distinct()
            ).scalars()
        )


class _Paced:
    """Wraps a sender so one drain never goes faster than its `rate_per_second`."""

    def __init__(self, sender: ChannelSender) -> None:
        self._sender = sender
        self._gap = 1.0 / sender.rate_per_second if sender.rate_per_second > 0 else 0.0
        self._next = 0.0

    async def __call__(self, row: OutboxMessage, message: OutgoingMessage) -> DeliveryResult:
        wait = self._next - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._next = time.monotonic() + self._gap
        return await self._sender.deliver(row, message)


async def drain_all(
    ctx: AppContext,
    senders: Mapping[str, ChannelSender] | None = None,
    *,
    limit: int = 50,
) -> dict[str, int]:
    """One drain of every channel; returns deliveries per channel.

    Without `senders`, the plugins are loaded for this call and closed after it; a long-running
    process loads them once and passes them in.
    """
    own = senders is None
    active: Mapping[str, ChannelSender] = load_channels(ctx) if senders is None else senders
    delivered: dict[str, int] = {}
    report = reporter_for(ctx)
    try:
        for channel in sorted(waiting_channels(ctx) - set(active) - _warned):
            _warned.add(channel)
            log.warning("outbox: no sender plugin for channel %r; its messages wait", channel)
        for channel, sender in active.items():
            delivered[channel] = await drain_once(
                ctx.engine, ctx.box, channel=channel, now=ctx.clock.now, deliver=_Paced(sender), limit=limit,
                report=report,
            )
    finally:
        if own:
            for sender in active.values():
                await sender.close()
    return delivered
