"""`run_due`: every lifecycle job due at ctx.clock.now(), in order, each recorded in the ledger.

Sweep and reminders are always due (they select what is due themselves, and are idempotent).
The register sync is due when its cron (Europe/Warsaw) has fired since its last run, and
retention once a day. `mleg jobs run-once` and the scheduler's catch-up both come here.
A ledger entry later than now (a test run with `--now` in the future, a clock set back) does
not count: it would otherwise hold the job back until real time caught up with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.triggers.cron import CronTrigger
from sqlmodel import Session

from core.app.clock import WARSAW
from core.app.context import AppContext
from core.jobs.ledger import JobResult, last_run, latest_future_run, run_job
from core.jobs.register_sync import sync_register
from core.jobs.reminders import reminders
from core.jobs.retention import retention
from core.jobs.sweep import sweep

__all__ = ["JOBS", "RETENTION_EVERY", "register_sync_trigger", "run_due"]

# Sync first (a removal it finds is swept the same run), then expiries, then reminders
# (a credential that just expired gets no "3 days left").
JOBS: dict[str, Callable[[AppContext], JobResult]] = {
    "register_sync": sync_register,
    "sweep": sweep,
    "reminders": reminders,
    "retention": retention,
}
RETENTION_EVERY = timedelta(days=1)

log = logging.getLogger(__name__)
# (database, job, future start) already warned about: the scheduler asks every few minutes.
_warned_future: set[tuple[str, str, datetime]] = set()


def register_sync_trigger(ctx: AppContext) -> CronTrigger:
    return CronTrigger.from_crontab(ctx.settings.jobs.register_sync_cron, timezone=WARSAW)


def _last_run(ctx: AppContext, name: str, now: datetime) -> datetime | None:
    """The last start at or before `now`; a later one is ignored, with one warning."""
    with Session(ctx.engine) as session:
        future = latest_future_run(session, name, now)
        last = last_run(session, name, not_after=now)
    if future is not None:
        _warn_future_once(ctx, name, future, now)
    return last


def _warn_future_once(ctx: AppContext, name: str, future: datetime, now: datetime) -> None:
    key = (ctx.engine.url.render_as_string(), name, future)
    if key in _warned_future:
        return
    _warned_future.add(key)
    log.warning(
        "job %s: the ledger has a run at %s, later than now (%s): ignored "
        "(a run-once --now in the future, or the clock was set back)",
        name, future.isoformat(), now.isoformat(),
    )


def _due(ctx: AppContext, name: str, now: datetime) -> str | None:
    """None when due, else why not."""
    if name == "register_sync":
        if not ctx.settings.jobs.register_sync_path:
            return "register_sync_path not set"
        last = _last_run(ctx, name, now)
        if last is None:
            return None
        fire = register_sync_trigger(ctx).get_next_fire_time(None, last + timedelta(microseconds=1))
        return None if fire is not None and fire <= now else f"next at {fire.isoformat() if fire else '-'}"
    if name == "retention":
        last = _last_run(ctx, name, now)
        if last is None or now - last >= RETENTION_EVERY:
            return None
        return f"next at {(last + RETENTION_EVERY).isoformat()}"
    return None


def run_due(ctx: AppContext) -> dict[str, JobResult]:
    """Run what is due now; returns per job its counts (with `ok`), or `skipped` and why."""
    now = ctx.clock.now()
    results: dict[str, JobResult] = {}
    for name, work in JOBS.items():
        reason = _due(ctx, name, now)
        if reason is not None:
            results[name] = {"ok": True, "skipped": reason}
            continue
        results[name] = run_job(ctx, name, work)
    return results
