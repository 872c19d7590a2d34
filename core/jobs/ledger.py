"""The job ledger: one JobRun row per run of a lifecycle job, with the counts of what it did."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.storage.db import unit_of_work
from core.storage.models import JobRun

__all__ = ["JobResult", "last_run", "latest_future_run", "run_job"]

log = logging.getLogger(__name__)

# A job returns its counts; `ok: False` in them marks a run that refused its input (a bad register file).
JobResult = dict[str, Any]


def run_job(ctx: AppContext, name: str, work: Callable[[AppContext], JobResult]) -> JobResult:
    """Run `work`, record the run in the ledger whatever happens; an exception becomes `ok: False`."""
    started = ctx.clock.now()
    try:
        result = dict(work(ctx))
    except Exception as exc:
        # The message may quote data; the ledger and the log keep only the kind of failure.
        log.exception("job %s failed: %s", name, type(exc).__name__)
        result = {"ok": False, "error": type(exc).__name__}
    ok = bool(result.pop("ok", True))
    with unit_of_work(ctx.engine) as session:
        session.add(
            JobRun(
                name=name,
                started_at=started,
                finished_at=ctx.clock.now(),
                ok=ok,
                detail=json.dumps(result, sort_keys=True, default=str),
            )
        )
    log.info("job %s %s: %s", name, "done" if ok else "FAILED", result)
    return {"ok": ok, **result}


def last_run(session: Session, name: str, *, not_after: datetime | None = None) -> datetime | None:
    """When the job last started (any outcome), from the ledger; with `not_after`, at or before it."""
    query = select(JobRun.started_at).where(JobRun.name == name)
    if not_after is not None:
        query = query.where(col(JobRun.started_at) <= not_after)
    return session.exec(query.order_by(col(JobRun.started_at).desc()).limit(1)).first()


def latest_future_run(session: Session, name: str, now: datetime) -> datetime | None:
    """The latest start recorded after `now` (a `--now` in the future, a clock set back), if any."""
    return session.exec(
        select(JobRun.started_at).where(JobRun.name == name, col(JobRun.started_at) > now)
        .order_by(col(JobRun.started_at).desc()).limit(1)
    ).first()
