"""`mleg serve`: the configured front-ends, one outbox drainer per channel, and the lifecycle jobs.

The front-ends are found through entry points (core.app.plugins), so core never imports them.
A sender that sets `concurrent_deliveries` above 1 (Telegram: each chat is its own
conversation) is drained by recipient: the rows of one recipient go one after another in
id order, up to that many recipients at a time; the sender's own limiter keeps the
overall rate. Other senders (SMTP) are drained one row at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import deque

from core.app.context import AppContext
from core.app.plugins import ChannelSender, Frontend, load_channels, load_frontends
from core.messaging import sending
from core.messaging.delivery_alerts import reporter_for
from core.messaging.delivery_failures import FailureReporter
from core.storage.models import OutboxMessage

__all__ = ["Server"]

log = logging.getLogger(__name__)
IDLE_POLL_SECONDS = 1.0
CLAIM_BATCH = 50
# On stop, how long a delivery in flight may take to finish and be recorded.
STOP_GRACE_SECONDS = 10.0


class _ByRecipient:
    """Claims due rows and hands them to per-recipient chains, at most `width` chains at a time.

    A row is claimed (leased) before it is queued here, so no other drainer takes it while
    the lease holds; one whose lease ran out while it waited in its chain is not attempted
    (sending.still_leased). A recipient with a chain running gets its new rows appended to
    that chain, never a second chain, so its messages keep their order and the sender's
    "wait behind an older row" check never sees its own predecessor still in flight.
    """

    def __init__(self, ctx: AppContext, channel: str, sender: ChannelSender, width: int,
                 report: FailureReporter | None = None) -> None:
        self.ctx, self.channel, self.sender, self.width = ctx, channel, sender, width
        self.report = report
        self._chains: dict[str, deque[OutboxMessage]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.progress = asyncio.Event()

    @property
    def queued(self) -> int:
        return sum(len(chain) for chain in self._chains.values())

    async def claim(self) -> int:
        """Claim what fits; returns how many rows were claimed."""
        room = 2 * self.width - self.queued - len(self._tasks)
        if room <= 0:
            return 0
        # On the database thread(s), as every database call here: a write waiting for SQLite's lock
        # (an engine turn committing) must not stall the event loop and every chat with it.
        rows = await self.ctx.in_database(sending.claim, self.ctx.engine, channel=self.channel,
                                          now=self.ctx.clock.now(), limit=min(CLAIM_BATCH, room))
        for row in rows:
            chain = self._chains.get(row.recipient)
            if chain is not None:
                chain.append(row)
                continue
            self._chains[row.recipient] = deque([row])
            task = asyncio.create_task(self._run_chain(row.recipient), name=f"drain-{self.channel}-chain")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(rows)

    async def _run_chain(self, recipient: str) -> None:
        chain = self._chains[recipient]
        try:
            while chain and not self._stopping:
                await self._deliver_one(chain.popleft())
        finally:
            if not (self._stopping and chain):  # stop() hands what is left back to the outbox
                del self._chains[recipient]
            self.progress.set()

    async def _deliver_one(self, row: OutboxMessage) -> None:
        now = self.ctx.clock.now()
        # A row that waited in its chain behind slow deliveries may have lost its lease to
        # another drainer; a fresh one (the usual chat reply) needs no database round trip.
        if not sending.lease_is_fresh(row, now) and not await self.ctx.in_database(
                sending.still_leased, self.ctx.engine, row, now):
            return
        result = await sending.attempt(self.ctx.box, row, self.sender.deliver)
        await self.ctx.in_database(sending.record, self.ctx.engine, row, result, self.ctx.clock.now(), self.report)

    async def stop(self) -> None:
        """Finish the deliveries in flight (a message sent and not recorded would be sent
        again after a restart), hand the rows not started back to the outbox."""
        self._stopping = True
        if self._tasks:
            try:
                await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_SECONDS)
            finally:
                # Also when this wait is itself cancelled: no chain outlives its drainer.
                late = [task for task in self._tasks if not task.done()]
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        waiting = [row for chain in self._chains.values() for row in chain]
        self._chains.clear()
        if waiting:
            await self.ctx.in_database(sending.release, self.ctx.engine, waiting)


class Server:
    """Starts everything, drains the outbox as soon as something is queued, stops in order."""

    def __init__(self, ctx: AppContext, *, run_jobs: bool = True) -> None:
        self.ctx = ctx
        self.run_jobs = run_jobs
        self.frontends: list[Frontend] = []
        self.channels: dict[str, ChannelSender] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._jobs: object | None = None
        # Failed deliveries logged, and alerts queued when they keep failing (core.messaging.delivery_alerts).
        self.report = reporter_for(ctx)

    def _on_outbox(self, channel: str) -> None:
        event = self._wake.get(channel)
        if event is not None:
            # Front-ends may call this from a worker thread.
            self._loop.call_soon_threadsafe(event.set)

    async def _drain_forever(self, channel: str, sender: ChannelSender) -> None:
        width = int(getattr(sender, "concurrent_deliveries", 1) or 1)
        if width > 1:
            await self._drain_by_recipient(channel, sender, width)
            return
        wake = self._wake[channel]
        while not self._stopping.is_set():
            try:
                sent = await sending.drain_once(self.ctx.engine, self.ctx.box, channel=channel,
                                               now=self.ctx.clock.now, deliver=sender.deliver, report=self.report,
                                               stopping=self._stopping.is_set, in_database=self.ctx.in_database)
            except Exception:
                log.exception("outbox drain of %s failed; retrying", channel)
                sent = 0
            if sent:
                continue
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), IDLE_POLL_SECONDS)

    async def _drain_by_recipient(self, channel: str, sender: ChannelSender, width: int) -> None:
        wake = self._wake[channel]
        drainer = _ByRecipient(self.ctx, channel, sender, width, self.report)
        try:
            while not self._stopping.is_set():
                wake.clear()
                drainer.progress.clear()
                try:
                    claimed = await drainer.claim()
                except Exception:
                    log.exception("outbox drain of %s failed; retrying", channel)
                    claimed = 0
                if claimed:
                    await asyncio.sleep(0)  # let the chains start before claiming more
                    continue
                waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(drainer.progress.wait())]
                try:
                    await asyncio.wait(waits, timeout=IDLE_POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waits:
                        waiter.cancel()
        finally:
            await drainer.stop()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # The understanding of students' text is trained once per process (seconds of CPU): here,
        # off the event loop, not inside the first student's update.
        # The context's one FAQ, which every front-end below is given (core.app.context.AppContext.faq).
        await asyncio.to_thread(lambda: self.ctx.faq)
        self.channels = load_channels(self.ctx)
        for channel in self.channels:
            self._wake[channel] = asyncio.Event()
        self.ctx.outbox_listeners.append(self._on_outbox)
        self.frontends = load_frontends(self.ctx)
        for frontend in self.frontends:
            await frontend.start()
            log.info("front-end %s started", frontend.name)
        for channel, sender in self.channels.items():
            self._tasks.append(asyncio.create_task(self._drain_forever(channel, sender), name=f"drain-{channel}"))
        if self.run_jobs:
            from core.jobs.scheduler import build_scheduler

            # The drain loops above already send as soon as something is queued.
            jobs = build_scheduler(self.ctx, senders=self.channels, drain=False)
            await jobs.start()
            self._jobs = jobs
        log.info("serving: front-ends %s, channels %s, jobs %s",
                 [f.name for f in self.frontends] or "none", sorted(self.channels) or "none",
                 "on" if self.run_jobs else "off")

    async def stop(self) -> None:
        self._stopping.set()
        for event in self._wake.values():
            event.set()
        if self._jobs is not None:
            await self._jobs.stop()  # type: ignore[attr-defined]
        for frontend in reversed(self.frontends):
            try:
                await frontend.stop()
            except Exception:
                log.exception("stopping %s failed", frontend.name)
        # The drain loops saw `_stopping` and finish the deliveries in flight on their own (a sent
        # message not recorded would go again after a restart); cancelled only if they overstay.
        _, late = await asyncio.wait(self._tasks, timeout=STOP_GRACE_SECONDS + 1.0) if self._tasks else (set(), set())
        for task in late:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sender in self.channels.values():
            with contextlib.suppress(Exception):
                await sender.close()
        self.ctx.close_database_threads()

    async def run_until_signalled(self) -> None:
        # Handlers first: a SIGTERM while the front-ends start must still stop them in order.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await self.start()
            await stop.wait()
        finally:
            log.info("stopping")
            await self.stop()
