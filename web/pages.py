"""The agents' pages: inbox, thread (reply, claim, take over, close), quarantine, dashboard.

Claims, answers and closing go through core.support.threads, the functions `mleg threads` and the
Telegram staff room use, so the three see one state; the audit trail names the staff login.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from core.app.errors import ConflictError, NotFoundError
from core.storage import audit
from core.storage.db import unit_of_work
from core.storage.models import InboundMail, InboundMailRaw
from core.support import answers
from core.support import threads as support
from web import charts, desk_queries, staff_room
from web.auth import SignedIn
from web.desk import Desk, guarded

__all__ = ["routes"]

QUARANTINE_LIMIT = 200


def _redirect(path: str, **params: str) -> RedirectResponse:
    return RedirectResponse(path + ("?" + urlencode(params) if params else ""), status_code=303)


def _inbox_data(desk: Desk, chosen: desk_queries.InboxFilter) -> dict[str, Any]:
    with Session(desk.ctx.engine) as session:
        return {"rows": desk_queries.inbox(desk.ctx, session, chosen), "channels": desk_queries.channels(session),
                "fingerprint": desk_queries.newest_activity(session), "now": desk.ctx.clock.now()}


def _inbox_data_if_changed(desk: Desk, chosen: desk_queries.InboxFilter, seen: str) -> dict[str, Any] | None:
    """None when nothing changed since the page's rows were drawn (one cheap query, the usual poll)."""
    with Session(desk.ctx.engine) as session:
        if seen and desk_queries.newest_activity(session) == seen:
            return None
    return _inbox_data(desk, chosen)


@guarded()
async def inbox(request: Request, desk: Desk, staff: SignedIn) -> Response:
    chosen = desk_queries.InboxFilter.parse(request.query_params, staff.login)
    data = await desk.db(_inbox_data, desk, chosen)
    query = urlencode({k: v for k, v in request.query_params.items() if k in ("status", "channel", "claimed", "q")})
    return desk.render(request, "inbox.html", chosen=chosen, statuses=desk_queries.STATUSES, query=query, **data)


@guarded()
async def inbox_rows(request: Request, desk: Desk, staff: SignedIn) -> Response:
    """The inbox's rows alone, for htmx polling; unchanged rows answer 204 (nothing swapped)."""
    chosen = desk_queries.InboxFilter.parse(request.query_params, staff.login)
    data = await desk.db(_inbox_data_if_changed, desk, chosen, str(request.query_params.get("seen") or ""))
    if data is None:
        return Response(status_code=204)
    query = urlencode({k: v for k, v in request.query_params.items() if k in ("status", "channel", "claimed", "q")})
    return desk.render(request, "inbox_rows.html", query=query, **data)


def _thread_data(desk: Desk, thread_id: int, language: str, answer: str) -> dict[str, Any]:
    faq = desk.faq
    with Session(desk.ctx.engine) as session:
        view = desk_queries.thread_view(session, thread_id)
    # Ready texts: the FAQ answers in the thread's language, under the issuing policy in force.
    texts = [(entry.id, entry.answer_for(desk.ctx.settings.policy)) for entry in faq.entries(view.thread.language)]
    chosen = next((text for entry_id, text in texts if entry_id == answer), "")
    return {"view": view, "ready_texts": texts, "draft": chosen, "chosen_answer": answer}


@guarded()
async def thread_page(request: Request, desk: Desk, staff: SignedIn) -> Response:
    thread_id = int(request.path_params["thread_id"])
    try:
        data = await desk.db(_thread_data, desk, thread_id, desk.language(request),
                             str(request.query_params.get("answer") or ""))
    except NotFoundError:
        return desk.render(request, "error.html", 404, message_key="errors.not_found")
    notice = request.query_params.get("notice", "")
    return desk.render(request, "thread.html", notice=notice if notice.isidentifier() else "",
                       holder=request.query_params.get("holder", ""), **data)


def _act(desk: Desk, thread_id: int, staff: SignedIn, action: str, text: str = "") -> tuple[str, str]:
    """Do one thread action; returns (notice key, holder) for the page shown after it."""
    ctx = desk.ctx
    told = False
    try:
        with unit_of_work(ctx.engine) as session:
            if action in ("claim", "take_over"):
                before = support.get_thread(session, thread_id).claimed_by
                thread = support.claim_thread(ctx, session, thread_id, staff=staff.login,
                                              force=action == "take_over")
                if before and before != staff.login:
                    told = staff_room.announce(ctx, session, thread, "taken_over", login=staff.login, holder=before)
                elif before != staff.login:
                    told = staff_room.announce(ctx, session, thread, "claimed", login=staff.login)
            elif action == "close":
                thread = support.close_thread(ctx, session, thread_id, staff=staff.login)
                told = staff_room.announce(ctx, session, thread, "closed", login=staff.login)
            elif action == "reply":
                answers.staff_reply(ctx, session, thread_id, text=text, staff=staff.login)
                thread = support.get_thread(session, thread_id)
                channel = thread.channel
                told = staff_room.announce(ctx, session, thread, "answered", login=staff.login)
    except support.ThreadClaimed as exc:
        return "claimed_by_other", exc.holder
    except ConflictError:
        return "conflict", ""
    if told:
        ctx.outbox_changed("staff")
    if action == "reply":
        ctx.outbox_changed(channel)  # `mleg serve` in this process sends it at once
    return {"claim": "claimed", "take_over": "taken_over", "close": "closed", "reply": "answered"}[action], ""


def _thread_action(action: str) -> Any:
    @guarded()
    async def endpoint(request: Request, desk: Desk, staff: SignedIn) -> Response:
        thread_id = int(request.path_params["thread_id"])
        text = str(request.state.form.get("text") or "").strip()
        if action == "reply" and not text:
            return _redirect(f"/threads/{thread_id}", notice="empty")
        try:
            notice, holder = await desk.db(_act, desk, thread_id, staff, action, text)
        except NotFoundError:
            return desk.render(request, "error.html", 404, message_key="errors.not_found")
        params = {"notice": notice, **({"holder": holder} if holder else {})}
        return _redirect(f"/threads/{thread_id}", **params)

    endpoint.__name__ = f"thread_{action}"
    return endpoint


# --- quarantine ---------------------------------------------------------------------------------

def _quarantined(desk: Desk) -> list[InboundMail]:
    with Session(desk.ctx.engine) as session:
        return list(session.exec(select(InboundMail).where(InboundMail.status == "quarantined")
                                 .order_by(sa.desc(col(InboundMail.id))).limit(QUARANTINE_LIMIT)).all())


@guarded()
async def quarantine(request: Request, desk: Desk, staff: SignedIn) -> Response:
    mails = await desk.db(_quarantined, desk)
    return desk.render(request, "quarantine.html", mails=mails, notice=request.query_params.get("notice", ""))


def _quarantine_act(desk: Desk, inbound_id: int, staff: SignedIn, action: str) -> str:
    ctx = desk.ctx
    with unit_of_work(ctx.engine) as session:
        mail = session.get(InboundMail, inbound_id)
        if mail is None or mail.status != "quarantined":
            return "gone"
        if action == "release":
            # Back to `new`: the mailbox reader of `mleg serve` handles it again at its next batch.
            mail.status = "new"
            mail.processed_at = None
            session.add(mail)
        else:
            raw = session.get(InboundMailRaw, inbound_id)
            if raw is not None:
                session.delete(raw)
            session.flush()
            session.delete(mail)
        audit.record(session, at=ctx.clock.now(), actor=f"staff:{staff.login}",
                     action=f"inbound_mail.{'released' if action == 'release' else 'deleted'}", inbound_id=inbound_id)
    return "released" if action == "release" else "deleted"


def _quarantine_action(action: str) -> Any:
    @guarded(admin=True)
    async def endpoint(request: Request, desk: Desk, staff: SignedIn) -> Response:
        notice = await desk.db(_quarantine_act, desk, int(request.path_params["inbound_id"]), staff, action)
        return _redirect("/quarantine", notice=notice)

    endpoint.__name__ = f"quarantine_{action}"
    return endpoint


# --- dashboard ----------------------------------------------------------------------------------

def _minutes(value: timedelta | None) -> str:
    if value is None:
        return "-"
    minutes = int(value.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


@guarded()
async def dashboard(request: Request, desk: Desk, staff: SignedIn) -> Response:
    def read() -> desk_queries.Dashboard:
        with Session(desk.ctx.engine) as session:
            return desk_queries.dashboard(desk.ctx, session)

    figures = await desk.db(read)
    language = desk.language(request)

    def t(key: str) -> str:
        return desk.ctx.catalog.text(language, f"web.{key}")

    per_day = charts.grouped_bars([d.strftime("%d.%m") for d in figures.days],
                                  [(t("dashboard.escalations"), figures.escalations),
                                   (t("dashboard.auto_answers"), figures.auto_answers)], t("dashboard.per_day"))
    states = charts.bars([(t(f"state.{k}") if desk.ctx.catalog.has(language, f"web.state.{k}") else k, v)
                          for k, v in figures.credentials_by_state.items()], t("dashboard.credentials"))
    return desk.render(request, "dashboard.html", figures=figures, per_day=per_day, states=states,
                       median=_minutes(figures.median_first_response))


def routes() -> list[Route]:
    return [
        Route("/inbox", inbox, methods=["GET"]),
        Route("/inbox/rows", inbox_rows, methods=["GET"]),
        Route("/threads/{thread_id:int}", thread_page, methods=["GET"]),
        *(Route(f"/threads/{{thread_id:int}}/{action.replace('_', '-')}", _thread_action(action), methods=["POST"])
          for action in ("claim", "take_over", "close", "reply")),
        Route("/quarantine", quarantine, methods=["GET"]),
        *(Route(f"/quarantine/{{inbound_id:int}}/{action}", _quarantine_action(action), methods=["POST"])
          for action in ("release", "delete")),
        Route("/dashboard", dashboard, methods=["GET"]),
    ]

