"""Operations endpoints: `/healthz` (JSON) and `/metrics` (Prometheus text format).

Both read the shared database, so they tell the state of the whole installation, not of one
process: several `mleg serve` on one PostgreSQL give the same figures. /healthz also asks the
Telegram Bot API itself (web.telegram_probe: getMe, short timeout, cached). Neither shows personal
data; keep them off the public side of the reverse proxy all the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.app.context import AppContext
from core.app.health import read_health
from core.jobs.leader import LIFECYCLE_LOCK, advisory_key
from core.storage.models import AuditEvent, JobRun, OutboxMessage, OutboxStatus, SupportMessage, SupportThread
from web.desk import Desk
from web.telegram_probe import TelegramProbe

__all__ = ["DatabaseCollector", "health", "routes"]


def _leader(session: Session) -> dict[str, Any]:
    """Whether a server holds the lifecycle jobs' lock (PostgreSQL); on SQLite the one server leads."""
    if session.get_bind().dialect.name != "postgresql":
        return {"held": None, "detail": "SQLite: the one `mleg serve` runs the jobs"}
    key = advisory_key(LIFECYCLE_LOCK) & 0xFFFF_FFFF_FFFF_FFFF
    pid = session.execute(sa.text(
        "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid::bigint = :high AND l.objid::bigint = :low"), {"high": key >> 32, "low": key & 0xFFFF_FFFF}
    ).scalar()
    return {"held": pid is not None, "detail": f"database pid {pid}" if pid else "no server holds it"}


def _age(now: datetime, then: datetime | None) -> float | None:
    return round((now - then).total_seconds(), 1) if then else None


def health(ctx: AppContext) -> tuple[bool, dict[str, Any]]:
    """(healthy, report): the database answers; the rest is reported for the operator to judge."""
    now = ctx.clock.now()
    try:
        with Session(ctx.engine) as session:
            session.execute(sa.text("SELECT 1"))
            oldest = session.execute(sa.select(sa.func.min(col(OutboxMessage.created_at)))
                                     .where(col(OutboxMessage.status) == OutboxStatus.PENDING)).scalar()
            connections = {row.name: {"ok": row.ok, "detail": row.detail, "since": row.since.isoformat()}
                           for row in read_health(session)}
            last_job = session.execute(sa.select(sa.func.max(col(JobRun.started_at)))).scalar()
            leader = _leader(session)
    except Exception as exc:
        return False, {"database": {"ok": False, "detail": type(exc).__name__}}
    return True, {
        "database": {"ok": True, "dialect": ctx.engine.dialect.name},
        "jobs": {"leader": leader, "last_run_age_seconds": _age(now, last_job)},
        "outbox": {"oldest_pending_age_seconds": _age(now, oldest)},
        "connections": connections,
    }


async def healthz(request: Request) -> Response:
    desk: Desk = request.app.state.desk
    probe: TelegramProbe = request.app.state.telegram_probe
    (ok, report), telegram = await asyncio.gather(desk.db(health, desk.ctx), probe.check())
    if telegram is not None and "connections" in report:
        # Asked now (at most every few seconds), not the last state a bot recorded.
        report["connections"]["telegram.api"] = telegram
    return JSONResponse({"ok": ok, **report}, status_code=200 if ok else 503)


class DatabaseCollector(Collector):
    """Figures read from the database at each scrape (so every process reports the same)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Any]:
        now = self.ctx.clock.now()
        with Session(self.ctx.engine) as session:
            support_messages = CounterMetricFamily(
                "mleg_support_messages", "Support-thread messages by channel and direction (in: from students)",
                labels=["channel", "direction"])
            for channel, direction, count in session.execute(
                    sa.select(col(SupportThread.channel), col(SupportMessage.direction), sa.func.count())
                    .join(SupportThread, col(SupportThread.id) == col(SupportMessage.thread_id))
                    .group_by(col(SupportThread.channel), col(SupportMessage.direction))):
                support_messages.add_metric([channel, direction], count)
            yield support_messages

            sent = CounterMetricFamily("mleg_messages_sent", "Outbox messages delivered, by channel",
                                       labels=["channel"])
            depth = GaugeMetricFamily("mleg_outbox_messages", "Outbox rows by channel and status",
                                      labels=["channel", "status"])
            for channel, status, count in session.execute(
                    sa.select(col(OutboxMessage.channel), col(OutboxMessage.status), sa.func.count())
                    .group_by(col(OutboxMessage.channel), col(OutboxMessage.status))):
                depth.add_metric([channel, status], count)
                if status == OutboxStatus.SENT:
                    sent.add_metric([channel], count)
            yield sent
            yield depth

            age = GaugeMetricFamily("mleg_outbox_oldest_pending_seconds", "Age of the oldest pending outbox row",
                                    labels=["channel"])
            for channel, oldest in session.execute(
                    sa.select(col(OutboxMessage.channel), sa.func.min(col(OutboxMessage.created_at)))
                    .where(col(OutboxMessage.status) == OutboxStatus.PENDING).group_by(col(OutboxMessage.channel))):
                age.add_metric([channel], (now - _aware(oldest)).total_seconds())
            yield age

            escalations = CounterMetricFamily("mleg_escalations", "Threads handed to staff (audit trail)")
            escalations.add_metric([], session.execute(sa.select(sa.func.count()).select_from(AuditEvent)
                                                       .where(col(AuditEvent.action) == "thread.escalated")).scalar()
                                   or 0)
            yield escalations

            threads = GaugeMetricFamily("mleg_threads", "Support threads by status", labels=["status"])
            for status, count in session.execute(sa.select(col(SupportThread.status), sa.func.count())
                                                 .group_by(col(SupportThread.status))):
                threads.add_metric([status], count)
            yield threads

            latency = GaugeMetricFamily("mleg_first_answer_seconds",
                                        "Time from a thread's opening to staff's first answer, last 100 answered",
                                        labels=["quantile"])
            firsts = (sa.select(col(SupportMessage.thread_id), sa.func.min(col(SupportMessage.created_at)).label("at"))
                      .where(col(SupportMessage.direction) == "out", col(SupportMessage.author).startswith("staff:"))
                      .group_by(col(SupportMessage.thread_id)).subquery())
            waits = sorted((_aware(at) - _aware(created)).total_seconds() for created, at in session.execute(
                sa.select(col(SupportThread.created_at), firsts.c.at)
                .join(firsts, firsts.c.thread_id == col(SupportThread.id))
                .order_by(sa.desc(firsts.c.at)).limit(100)))
            if waits:
                for q in (0.5, 0.9):
                    latency.add_metric([str(q)], waits[min(len(waits) - 1, int(q * len(waits)))])
            yield latency

            duration = GaugeMetricFamily("mleg_job_last_duration_seconds", "Duration of each job's last run",
                                         labels=["job"])
            ok = GaugeMetricFamily("mleg_job_last_ok", "1 when each job's last run succeeded", labels=["job"])
            last_runs = sa.select(sa.func.max(col(JobRun.id))).group_by(col(JobRun.name))
            for run in session.exec(select(JobRun).where(col(JobRun.id).in_(last_runs))):
                if run.finished_at is not None:
                    duration.add_metric([run.name], (run.finished_at - run.started_at).total_seconds())
                ok.add_metric([run.name], 1.0 if run.ok else 0.0)
            yield duration
            yield ok


def _aware(value: datetime) -> datetime:
    # Aggregates (min/max) bypass the column type on SQLite and come back naive; they are UTC.
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def metrics(request: Request) -> Response:
    desk: Desk = request.app.state.desk
    registry: CollectorRegistry = request.app.state.metrics
    body = await desk.db(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def routes() -> list[Route]:
    return [Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics, methods=["GET"])]
