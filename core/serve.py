"""`mleg serve`: the configured front-ends, one outbox drainer per channel, and the lifecycle jobs.

The front-ends are found through entry points (core.plugins), so core never imports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from core import outbox
from core.context import AppContext
from core.plugins import ChannelSender, Frontend, load_channels, load_frontends

__all__ = ["Server"]

log = logging.getLogger(__name__)
IDLE_POLL_SECONDS = 1.0


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

    def _on_outbox(self, channel: str) -> None:
        event = self._wake.get(channel)
        if event is not None:
            # Front-ends may call this from a worker thread.
            self._loop.call_soon_threadsafe(event.set)

    async def _drain_forever(self, channel: str, sender: ChannelSender) -> None:
        wake = self._wake[channel]
        while not self._stopping.is_set():
            try:
                sent = await outbox.drain_once(self.ctx.engine, self.ctx.box, channel=channel,
                                               now=self.ctx.clock.now, deliver=sender.deliver)
            except Exception:
                log.exception("outbox drain of %s failed; retrying", channel)
                sent = 0
            if sent:
                continue
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), IDLE_POLL_SECONDS)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
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
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sender in self.channels.values():
            with contextlib.suppress(Exception):
                await sender.close()

    async def run_until_signalled(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            await self.stop()
