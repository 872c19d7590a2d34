"""Register sync on a schedule: the configured CSV, with the rules of `mleg registry import --sync`.

A refused file changes nothing; the run is recorded as failed with the number of problems
(never the lines themselves: they may quote a PESEL; nor the database's message, which quotes
rows). A file that is empty or would mark more than MLEG_REGISTRY__MAX_REMOVED_SHARE of the
active students removed is refused too: unattended, a cut-off export must not revoke the
university. Only an operator may force that, by hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.app.context import AppContext
from core.app.errors import MassRemovalError, RegisterImportError
from core.jobs.ledger import JobResult
from core.storage.db import unit_of_work
from core.students.register import RegisterWriteError, import_register
from core.students.register_csv import parse_register

__all__ = ["sync_register"]

log = logging.getLogger(__name__)


def sync_register(ctx: AppContext) -> JobResult:
    configured = ctx.settings.jobs.register_sync_path
    if not configured:
        return {"skipped": "register_sync_path not set"}
    path = Path(configured)
    try:
        data = path.read_bytes()
    except OSError as exc:
        log.error("register sync: cannot read %s: %s", path, exc.strerror)
        return {"ok": False, "file": path.name, "error": "unreadable"}
    try:
        rows = parse_register(data, box=ctx.box, email_domains=ctx.settings.university.email_domains)
        with unit_of_work(ctx.engine) as session:
            report = import_register(
                session, rows, now=ctx.clock.now(), today=ctx.clock.today(), sync=True,
                actor="jobs", source=str(path),
                max_removed_share=ctx.settings.registry.max_removed_share, allow_mass_removal=False, ctx=ctx,
            )
    except MassRemovalError as exc:
        log.error("register sync: %s refused, the register is unchanged: %s", path.name, exc.reason)
        return {
            "ok": False, "file": path.name, "refused": True, "error": "mass removal",
            "message": f"{exc.reason}; if it is right, import it by hand: "
                       "mleg registry import FILE --sync --allow-mass-removal",
            "would_remove": exc.would_remove, "active": exc.active,
        }
    except RegisterImportError as exc:
        log.error("register sync: %s refused, %d problem(s); the register is unchanged",
                  path.name, len(exc.problems))
        return {"ok": False, "file": path.name, "refused": True, "problems": len(exc.problems)}
    except RegisterWriteError as exc:
        log.error("register sync: %s refused: %s", path.name, exc)
        return {"ok": False, "file": path.name, "refused": True, "error": str(exc)}
    result = {
        "file": path.name, "rows": report.total, "added": report.added, "updated": report.updated,
        "unchanged": report.unchanged, "removed": report.removed,
    }
    # Said only when it happened, so a quiet night's ledger reads as before.
    for name in ("kept_absent", "pesel_moved", "credentials_moved", "email_changed", "activations_revoked",
                 "mail_cancelled"):
        if getattr(report, name):
            result[name] = getattr(report, name)
    return result
