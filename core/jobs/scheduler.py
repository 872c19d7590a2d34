"""The jobs inside `mleg serve`: APScheduler 3 (AsyncIOScheduler) plus the leadership lock.

Lifecycle jobs (sweep, reminders, register sync, retention) run only in the process holding
the lock (see core.jobs.leader); the outbox drainer runs in every process, because
`claim_due` leases rows with SKIP LOCKED on PostgreSQL, so instances share the sending.
The job stores are in memory; what was missed while no process ran is caught up from the
ledger (`run_due`) at start and whenever this process becomes the leader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from core.app.clock import WARSAW
from core.app.context import AppContext
from core.app.plugins import ChannelSender, load_channels
from core.jobs.drain import drain_all
from core.jobs.leader import Leadership
from core.jobs.ledger import run_job
from core.jobs.runner import JOBS, register_sync_trigger, run_due

__all__ = ["JobsService", "build_scheduler"]

log = logging.getLogger(__name__)

RETENTION_CRON = "30 4 * * *"
MISFIRE_GRACE_SECONDS = 15 * 60
STOP_WAIT_SECONDS = 60.0


class JobsService:
    """Started and stopped by `mleg serve`; `is_leader` says whether this process runs the lifecycle jobs."""

    def __init__(
        self,
        ctx: AppContext,
        *,
        senders: Mapping[str, ChannelSender] | None = None,
        leadership: Leadership | None = None,
        leader_retry_seconds: float = 30.0,
        drain: bool = True,
    ) -> None:
        self.ctx = ctx
        self.leadership = leadership or Leadership(ctx.engine)
        self._given_senders = senders
        self._senders: Mapping[str, ChannelSender] = {}
        self._retry = leader_retry_seconds
        self._drain = drain
        self._running: set[asyncio.Task[Any]] = set()
        self._leading = False
        self._check_lock = asyncio.Lock()
        self.scheduler = AsyncIOScheduler(
            timezone=WARSAW,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_SECONDS},
        )

    @property
    def is_leader(self) -> bool:
        return self.leadership.held

    async def start(self) -> None:
        settings = self.ctx.settings.jobs
        if self._drain:
            self._senders = self._given_senders if self._given_senders is not None else load_channels(self.ctx)
        add = self.scheduler.add_job
        add(self._tracked(self.check_leadership), IntervalTrigger(seconds=self._retry), id="leadership",
            name="leadership")
        add(self._tracked(self._lifecycle("sweep")),
            IntervalTrigger(minutes=settings.sweep_interval_minutes), id="sweep", name="sweep")
        add(self._tracked(self._lifecycle("reminders")),
            IntervalTrigger(minutes=settings.reminders_interval_minutes), id="reminders", name="reminders")
        if settings.register_sync_path:
            add(self._tracked(self._lifecycle("register_sync")), register_sync_trigger(self.ctx),
                id="register_sync", name="register_sync")
        add(self._tracked(self._lifecycle("retention")),
            CronTrigger.from_crontab(RETENTION_CRON, timezone=WARSAW), id="retention", name="retention")
        if self._drain:
            add(self._tracked(self.drain), IntervalTrigger(seconds=settings.outbox_interval_seconds),
                id="outbox", name="outbox")
        self._leading = await asyncio.to_thread(self.leadership.try_acquire)
        self.scheduler.start()
        if self._leading:
            # In the background: start() returns at once, however much the process missed while down.
            self._spawn(self.catch_up())
        log.info("jobs scheduler started: %s; outbox drained %s", "leader" if self._leading else "follower",
                 "by the scheduler" if self._drain else "by the caller (mleg serve)")

    async def idle(self) -> None:
        """Wait for the jobs in flight (tests, and stop())."""
        while self._running:
            await asyncio.wait(set(self._running))

    async def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self._running:
            await asyncio.wait(set(self._running), timeout=STOP_WAIT_SECONDS)
        await asyncio.to_thread(self.leadership.release)
        if self._given_senders is None:
            for sender in self._senders.values():
                await sender.close()
        log.info("jobs scheduler stopped")

    async def check_leadership(self) -> bool:
        """Take the lock if free; on becoming the leader, catch up on everything due."""
        async with self._check_lock:
            held = await asyncio.to_thread(self.leadership.try_acquire)
            became_leader = held and not self._leading
            self._leading = held
        if became_leader:
            await self.catch_up()
        return held

    async def catch_up(self) -> dict[str, Any]:
        """Whatever is due now: expiries and reminders missed while down, a missed sync or retention."""
        if not self.leadership.held:
            return {}
        return await asyncio.to_thread(run_due, self.ctx)

    async def drain(self) -> dict[str, int]:
        return await drain_all(self.ctx, self._senders)

    def _lifecycle(self, name: str) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            if not self.leadership.held:
                return
            await asyncio.to_thread(run_job, self.ctx, name, JOBS[name])

        job.__name__ = f"lifecycle_{name}"
        return job

    def _spawn(self, work: Awaitable[Any]) -> None:
        async def run() -> None:
            await work

        task = asyncio.ensure_future(self._tracked(run)())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _tracked(self, func: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
        """stop() waits for jobs in flight; a failing job is logged, never kills the scheduler."""

        async def wrapper() -> None:
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                await func()
            except Exception:
                log.exception("scheduled job %s failed", getattr(func, "__name__", func))
            finally:
                if task is not None:
                    self._running.discard(task)

        wrapper.__name__ = getattr(func, "__name__", "job")
        return wrapper


def build_scheduler(ctx: AppContext, **options: Any) -> JobsService:
    """What `mleg serve` calls: `service = build_scheduler(ctx); await service.start(); ... await service.stop()`."""
    return JobsService(ctx, **options)
