"""The admins' pages: credentials (find, history, revoke with a reason, resend activation data),
locked-out students, audit log."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from core.app.errors import ConflictError, RateLimitedError
from core.credentials import service
from core.credentials.lifecycle import EndReason
from core.security import lockout
from core.storage.db import unit_of_work
from core.storage.models import LIVE_STATES, AuditEvent, ChatLink, Credential, CredentialState, Student
from web import desk_queries
from web.auth import SignedIn
from web.desk import WARSAW, Desk, guarded

__all__ = ["REVOKE_REASONS", "routes"]

# The end reasons staff give by hand (as `mleg credentials revoke --reason`); the rest are the jobs' own.
REVOKE_REASONS = (EndReason.LOST_PHONE, EndReason.NEW_PHONE, EndReason.STUDENT_REQUEST, EndReason.GRADUATION,
                  EndReason.REMOVAL, EndReason.STAFF)
SEARCH_LIMIT = 50
AUDIT_LIMIT = 300


def _redirect(path: str, **params: str) -> RedirectResponse:
    return RedirectResponse(path + ("?" + urlencode(params) if params else ""), status_code=303)


def _search(desk: Desk, q: str) -> list[desk_queries.StudentCard]:
    if not q:
        return []
    with Session(desk.ctx.engine) as session:
        pattern = f"%{q.lower()}%"
        students = session.exec(select(Student).where(sa.or_(
            col(Student.album) == q, sa.func.lower(col(Student.last_name)).like(pattern),
            sa.func.lower(col(Student.first_name) + " " + col(Student.last_name)).like(pattern),
        )).order_by(col(Student.last_name), col(Student.first_name)).limit(SEARCH_LIMIT)).all()
        return [card for s in students if (card := desk_queries.student_card(session, s.id)) is not None]


@guarded(admin=True)
async def credentials_page(request: Request, desk: Desk, staff: SignedIn) -> Response:
    q = str(request.query_params.get("q") or "").strip()[:120]
    cards = await desk.db(_search, desk, q)
    return desk.render(request, "credentials.html", q=q, cards=cards)


def _student_data(desk: Desk, student_id: int) -> dict[str, Any] | None:
    with Session(desk.ctx.engine) as session:
        card = desk_queries.student_card(session, student_id)
        if card is None:
            return None
        creds = session.exec(select(Credential).where(Credential.student_id == student_id)
                             .order_by(sa.desc(col(Credential.id)))).all()
        return {"card": card,
                "credentials": [(c, desk_queries.credential_history(session, c.id or 0)) for c in creds]}


@guarded(admin=True)
async def student_page(request: Request, desk: Desk, staff: SignedIn) -> Response:
    data = await desk.db(_student_data, desk, int(request.path_params["student_id"]))
    if data is None:
        return desk.render(request, "error.html", 404, message_key="errors.not_found")
    return desk.render(request, "student.html", reasons=REVOKE_REASONS, live=[s.value for s in LIVE_STATES],
                       notice=request.query_params.get("notice", ""), **data)


def _revoke(desk: Desk, credential_id: int, reason: EndReason, staff: SignedIn) -> tuple[int, str]:
    ctx = desk.ctx
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        if credential is None:
            return 0, "not_found"
        if credential.state not in [s.value for s in LIVE_STATES]:
            return credential.student_id, "already_ended"
        service.revoke(ctx, session, credential, reason=reason, actor=f"staff:{staff.login}",
                       language=_language(desk, session, credential.student_id))
        student_id = credential.student_id
    ctx.outbox_changed("email")
    return student_id, "revoked"


@guarded(admin=True)
async def revoke(request: Request, desk: Desk, staff: SignedIn) -> Response:
    try:
        reason = EndReason(str(request.state.form.get("reason") or ""))
    except ValueError:
        reason = None
    if reason not in REVOKE_REASONS:
        return desk.render(request, "error.html", 400, message_key="errors.bad_reason")
    student_id, notice = await desk.db(_revoke, desk, int(request.path_params["credential_id"]), reason, staff)
    if not student_id:
        return desk.render(request, "error.html", 404, message_key="errors.not_found")
    return _redirect(f"/students/{student_id}", notice=notice)


def _language(desk: Desk, session: Session, student_id: int) -> str:
    """The language the student last chose in a chat (the mail has both halves anyway)."""
    link = session.exec(select(ChatLink).where(ChatLink.student_id == student_id)
                        .order_by(sa.desc(col(ChatLink.bound_at)))).first()
    return link.language if link else desk.ctx.settings.default_language


def _resend(desk: Desk, credential_id: int, staff: SignedIn) -> tuple[int, str]:
    ctx = desk.ctx
    try:
        with unit_of_work(ctx.engine) as session:
            credential = session.get(Credential, credential_id)
            if credential is None:
                return 0, "not_found"
            student_id = credential.student_id
            if credential.state != CredentialState.PENDING_ACTIVATION:
                return student_id, "not_pending"
            # The same service as `mleg credentials resend`: new data, register address only, audited.
            service.resend_activation(ctx, session, credential, actor=f"staff:{staff.login}",
                                      language=_language(desk, session, student_id))
    except RateLimitedError:
        return student_id, "resend_limited"
    except ConflictError:
        return student_id, "window_passed"
    ctx.outbox_changed("email")
    return student_id, "resent"


@guarded(admin=True)
async def resend(request: Request, desk: Desk, staff: SignedIn) -> Response:
    student_id, notice = await desk.db(_resend, desk, int(request.path_params["credential_id"]), staff)
    if not student_id:
        return desk.render(request, "error.html", 404, message_key="errors.not_found")
    return _redirect(f"/students/{student_id}", notice=notice)


# --- students locked out by guessing --------------------------------------------------------------

def _locked(desk: Desk) -> list[tuple[AuditEvent, Student | None]]:
    """Students told of a lock within the last day whose lock was not lifted since."""
    since = desk.ctx.clock.now() - lockout.NOTICE_EVERY
    with Session(desk.ctx.engine) as session:
        notices = session.exec(select(AuditEvent).where(AuditEvent.action == "student.lock_notified",
                                                        col(AuditEvent.at) >= since)
                               .order_by(sa.desc(col(AuditEvent.at)))).all()
        found = []
        for notice in notices:
            lifted = session.exec(select(AuditEvent.id).where(
                AuditEvent.action == "student.unlocked", AuditEvent.student_id == notice.student_id,
                col(AuditEvent.at) >= notice.at)).first()
            if lifted is None:
                found.append((notice, session.get(Student, notice.student_id)))
        return found


@guarded(admin=True)
async def locked_page(request: Request, desk: Desk, staff: SignedIn) -> Response:
    rows = await desk.db(_locked, desk)
    return desk.render(request, "locked.html", rows=rows, notice=request.query_params.get("notice", ""),
                       cleared=request.query_params.get("cleared", ""))


def _unlock(desk: Desk, album: str, staff: SignedIn) -> tuple[str, int]:
    with unit_of_work(desk.ctx.engine) as session:
        student = session.exec(select(Student).where(Student.album == album)).first()
        if student is None:
            return "unknown_album", 0
        cleared = lockout.unlock(desk.ctx, session, student, actor=f"staff:{staff.login}")
    return ("unlocked" if cleared else "nothing_to_lift"), cleared


@guarded(admin=True)
async def unlock(request: Request, desk: Desk, staff: SignedIn) -> Response:
    album = str(request.state.form.get("album") or "").strip()[:32]
    notice, cleared = await desk.db(_unlock, desk, album, staff)
    return _redirect("/locked", notice=notice, cleared=str(cleared))


# --- audit log ------------------------------------------------------------------------------------

def _day(value: str) -> datetime | None:
    try:
        return datetime.combine(datetime.strptime(value, "%Y-%m-%d").date(), time.min, tzinfo=WARSAW)
    except ValueError:
        return None


def _audit(desk: Desk, actor: str, action: str, since: datetime | None, until: datetime | None) -> list[AuditEvent]:
    query = select(AuditEvent)
    if actor:
        query = query.where(col(AuditEvent.actor).contains(actor))
    if action:
        query = query.where(col(AuditEvent.action).startswith(action))
    if since:
        query = query.where(col(AuditEvent.at) >= since)
    if until:
        query = query.where(col(AuditEvent.at) < until + timedelta(days=1))
    with Session(desk.ctx.engine) as session:
        return list(session.exec(query.order_by(sa.desc(col(AuditEvent.id))).limit(AUDIT_LIMIT)).all())


@guarded(admin=True)
async def audit_page(request: Request, desk: Desk, staff: SignedIn) -> Response:
    params = {k: str(request.query_params.get(k) or "").strip()[:64] for k in ("actor", "action", "since", "until")}
    events = await desk.db(_audit, desk, params["actor"], params["action"], _day(params["since"]),
                           _day(params["until"]))
    return desk.render(request, "audit.html", events=events, params=params)


def routes() -> list[Route]:
    return [
        Route("/credentials", credentials_page, methods=["GET"]),
        Route("/students/{student_id:int}", student_page, methods=["GET"]),
        Route("/credentials/{credential_id:int}/revoke", revoke, methods=["POST"]),
        Route("/credentials/{credential_id:int}/resend", resend, methods=["POST"]),
        Route("/locked", locked_page, methods=["GET"]),
        Route("/locked/unlock", unlock, methods=["POST"]),
        Route("/audit", audit_page, methods=["GET"]),
    ]
