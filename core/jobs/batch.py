"""How many rows a job moves per transaction on this deployment's database."""

from __future__ import annotations

from core.app.context import AppContext

__all__ = ["batch_size"]


def batch_size(ctx: AppContext) -> int:
    """MLEG_JOBS__BATCH_SIZE when set, else the default of the database in use (core.app.settings.JOB_BATCH_SIZES)."""
    return ctx.settings.jobs.batch_size_for(ctx.engine.dialect.name)
