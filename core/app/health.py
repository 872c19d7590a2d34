"""What a server knows about its own connections (mail logins, token requests), kept for `mleg status`.

A front-end reports each outcome to a `HealthRecorder`; the recorder writes a row only when
the state changes (ok -> failed, another error, failed -> ok) or an hour after the last write,
so a healthy server costs no write per message, and `mleg status`, a separate process, still
reads when it last worked and what the provider said when it did not.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from core.app.clock import Clock
from core.storage.db import unit_of_work
from core.storage.models import ServiceHealth

__all__ = ["HealthRecorder", "read_health"]

log = logging.getLogger(__name__)

REWRITE_AFTER = timedelta(hours=1)


class HealthRecorder:
    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._last: dict[str, tuple[bool, str, datetime]] = {}

    def record(self, name: str, ok: bool, detail: str) -> None:
        """Remember the outcome; never raises (a status line must not stop the mail)."""
        now = self.clock.now()
        last = self._last.get(name)
        if last is not None and last[:2] == (ok, detail) and now - last[2] < REWRITE_AFTER:
            return
        try:
            with unit_of_work(self.engine) as session:
                row = session.get(ServiceHealth, name)
                if row is None:
                    row = ServiceHealth(name=name, ok=ok, detail=detail, checked_at=now, since=now)
                elif row.ok != ok:
                    row.since = now
                row.ok, row.detail, row.checked_at = ok, detail[:1000], now
                session.add(row)
        except Exception as exc:
            log.warning("could not record the health of %s: %s", name, exc)
            return
        self._last[name] = (ok, detail, now)


def read_health(session: Session, prefix: str = "") -> list[ServiceHealth]:
    return list(session.exec(
        select(ServiceHealth).where(col(ServiceHealth.name).startswith(prefix)).order_by(col(ServiceHealth.name))
    ).all())
