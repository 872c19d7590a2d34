"""Lifecycle jobs: expiry sweep, reminders, register sync, retention, outbox drain, and their scheduler.

The work lives in plain functions of an AppContext (testable with a FixedClock, run by
`mleg jobs run-once`); `core.jobs.scheduler` runs them on time inside `mleg serve`.
"""

from core.jobs.drain import drain_all
from core.jobs.ledger import run_job
from core.jobs.register_sync import sync_register
from core.jobs.reminders import reminders
from core.jobs.retention import retention
from core.jobs.runner import run_due
from core.jobs.sweep import expire_validity, sweep

__all__ = [
    "drain_all",
    "expire_validity",
    "reminders",
    "retention",
    "run_due",
    "run_job",
    "sweep",
    "sync_register",
]
