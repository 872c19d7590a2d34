"""The sign-in and sign-out pages and the language switch."""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from core.app.catalog import LANGUAGES
from web import auth
from web.desk import COOKIE_LANGUAGE, WARSAW, Desk, guarded

__all__ = ["routes"]


def _client_address(request: Request) -> str:
    # Behind the reverse proxy uvicorn puts the address from X-Forwarded-For here, but only
    # when the proxy is in web.forwarded_allow_ips.
    return request.client.host if request.client else "unknown"


def _safe_next(target: str | None) -> str:
    """Only a path of ours: never an address elsewhere (//host or a scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/inbox"
    return target


async def sign_in_page(request: Request) -> Response:
    desk: Desk = request.app.state.desk
    token = secrets.token_urlsafe(24)
    response = desk.render(request, "sign_in.html", form_token=token, next=_safe_next(request.query_params.get("next")))
    desk.set_cookie(response, desk.sign_in_cookie, token, max_age=3600)
    return response


async def sign_in_post(request: Request) -> Response:
    desk: Desk = request.app.state.desk
    form = await request.form()
    target = _safe_next(str(form.get("next") or ""))
    if not auth.tokens_match(form.get("csrf"), request.cookies.get(desk.sign_in_cookie) or "-"):  # type: ignore[arg-type]
        return desk.render(request, "error.html", 403, message_key="errors.csrf")
    result = await desk.db(auth.sign_in, desk.ctx, str(form.get("login") or ""), str(form.get("password") or ""),
                           str(form.get("code") or ""), _client_address(request))
    if result.token is None:
        token = secrets.token_urlsafe(24)
        until = result.until.astimezone(WARSAW) if result.until else None
        response = desk.render(request, "sign_in.html", 403 if result.refused != "sign_in.rate_limited" else 429,
                               form_token=token, next=target, refused=result.refused,
                               until=until.strftime("%H:%M") if until else "", login=str(form.get("login") or ""))
        desk.set_cookie(response, desk.sign_in_cookie, token, max_age=3600)
        return response
    response = RedirectResponse(target, status_code=303)
    desk.set_cookie(response, desk.session_cookie, result.token)
    response.delete_cookie(desk.sign_in_cookie, path="/")
    return response


@guarded()
async def sign_out(request: Request, desk: Desk, staff: auth.SignedIn) -> Response:
    await desk.db(auth.end_session, desk.ctx, request.cookies.get(desk.session_cookie))
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(desk.session_cookie, path="/")
    return response


@guarded()
async def language(request: Request, desk: Desk, staff: auth.SignedIn) -> Response:
    chosen = str(request.state.form.get("language") or "")
    response = RedirectResponse(_safe_next(str(request.state.form.get("next") or "")), status_code=303)
    if chosen in LANGUAGES:
        desk.set_cookie(response, COOKIE_LANGUAGE, chosen, max_age=365 * 24 * 3600)
    return response


def routes() -> list[Route]:
    return [
        Route("/sign-in", sign_in_page, methods=["GET"]),
        Route("/sign-in", sign_in_post, methods=["POST"]),
        Route("/sign-out", sign_out, methods=["POST"]),
        Route("/language", language, methods=["POST"]),
    ]
