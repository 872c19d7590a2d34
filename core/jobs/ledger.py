"""The job ledger: one JobRun row per run of a lifecycle job, with the counts of what it did."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from core.context import AppContext
from core.db import unit_of_work
from core.models import JobRun

__all__ = ["JobResult", "last_run", "run_job"]

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


def last_run(session: Session, name: str) -> datetime | None:
    """When the job last started (any outcome), from the ledger."""
    return session.exec(
        select(JobRun.started_at).where(JobRun.name == name).order_by(col(JobRun.started_at).desc()).limit(1)
    ).first()
