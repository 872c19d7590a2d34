"""What every console page shares: the Desk (context, templates, FAQ), security headers, and the guard.

Pages are rendered on the server (Jinja2) and every action is a plain HTML form, so the
console works without JavaScript; htmx (served from web/static, no CDN) only refreshes the
inbox by itself. Database work runs in Starlette's thread pool, apart from the chat's own
database thread (AppContext.in_database), so staff polling never queues a student's turn.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.app.catalog import LANGUAGES
from core.app.context import AppContext
from core.storage import audit
from core.storage.db import unit_of_work
from core.support.faq import Faq
from web import auth

__all__ = ["COOKIE_LANGUAGE", "HERE", "WARSAW", "Desk", "SecurityHeaders", "guarded"]

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
WARSAW = ZoneInfo("Europe/Warsaw")
COOKIE_LANGUAGE = "mleg_lang"
T = TypeVar("T")

# Nothing inline, nothing from elsewhere: scripts and styles only from our own /static.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the CSP and friends to every response; pages (not static files) are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class Desk:
    """What every page needs: the context, the templates, the cookie names."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"),
                               autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
        self.env.filters["when"] = _when
        self.env.filters["age"] = _age
        self.env.filters["day"] = lambda value: value.strftime("%Y-%m-%d") if value else ""
        secure = ctx.settings.web.secure_cookies
        # The __Host- prefix: the browser takes the cookie only over HTTPS, for this host, path /.
        self.session_cookie = "__Host-mleg-session" if secure else "mleg_session"
        self.sign_in_cookie = "__Host-mleg-sign-in" if secure else "mleg_sign_in"

    @property
    def faq(self) -> Faq:
        """The context's FAQ (core.app.context): loaded once per process through the configuration layers
        (MLEG_CONFIG_DIR overrides) and shared with the chat and the mailbox reader; the thread page
        reads only its answers."""
        return self.ctx.faq

    async def db(self, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(work, *args, **kwargs)

    def language(self, request: Request) -> str:
        chosen = request.cookies.get(COOKIE_LANGUAGE)
        if chosen in LANGUAGES:
            return chosen
        header = request.headers.get("accept-language", "")
        for part in header.split(","):
            code = part.split(";")[0].strip()[:2].lower()
            if code in LANGUAGES:
                return code
        return self.ctx.settings.default_language

    def render(self, request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        language = self.language(request)
        catalog = self.ctx.catalog

        def t(key: str, **params: Any) -> str:
            # A notice named in the URL (?notice=...) may be anything: an unknown one shows as its key.
            if not catalog.has(language, f"web.{key}") and not catalog.has("en", f"web.{key}"):
                return key
            return catalog.text(language, f"web.{key}", **params)

        signed_in: auth.SignedIn | None = getattr(request.state, "staff", None)
        html = self.env.get_template(template).render(
            t=t, lang=language, staff=signed_in, path=request.url.path, request=request,
            sso_enabled=self.ctx.settings.web.oidc.enabled,
            refresh=self.ctx.settings.web.inbox_refresh_seconds, **values)
        return HTMLResponse(html, status_code=status_code)

    def set_cookie(self, response: Response, name: str, value: str, *, max_age: int | None = None) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", secure=self.ctx.settings.web.secure_cookies,
                            httponly=True, samesite="strict")


def _age(value: timedelta) -> str:
    minutes = max(0, int(value.total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60:02d} min"
    return f"{minutes // (24 * 60)} d {minutes % (24 * 60) // 60} h"


def _when(value: datetime | None) -> str:
    return value.astimezone(WARSAW).strftime("%Y-%m-%d %H:%M") if value else ""


Handler = Callable[[Request, Desk, auth.SignedIn], Awaitable[Response]]


def guarded(*, admin: bool = False) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """A page for signed-in staff (admins only with admin=True); a POST must carry the session's CSRF token.

    The handler finds the parsed form in `request.state.form`.
    """

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            desk: Desk = request.app.state.desk
            signed_in = await desk.db(auth.load_session, desk.ctx, request.cookies.get(desk.session_cookie))
            if signed_in is None:
                if request.method != "GET":
                    return desk.render(request, "error.html", 403, message_key="errors.signed_out")
                target = "/sign-in?next=" + quote(request.url.path)
                if request.headers.get("hx-request"):
                    return Response(status_code=204, headers={"HX-Redirect": target})
                return RedirectResponse(target, status_code=303)
            request.state.staff = signed_in
            if admin and not signed_in.admin:
                await desk.db(_audit_refusal, desk, signed_in, request.url.path, "admin_only")
                return desk.render(request, "error.html", 403, message_key="errors.admin_only")
            if request.method == "POST":
                form = await request.form()
                if not auth.tokens_match(form.get("csrf"), signed_in.csrf):  # type: ignore[arg-type]
                    await desk.db(_audit_refusal, desk, signed_in, request.url.path, "csrf")
                    return desk.render(request, "error.html", 403, message_key="errors.csrf")
                request.state.form = form
            return await handler(request, desk, signed_in)

        return endpoint

    return wrap


def _audit_refusal(desk: Desk, signed_in: auth.SignedIn, path: str, reason: str) -> None:
    with unit_of_work(desk.ctx.engine) as session:
        audit.record(session, at=desk.ctx.clock.now(), actor=f"staff:{signed_in.login}", action="web.refused",
                     path=path[:200], reason=reason)
