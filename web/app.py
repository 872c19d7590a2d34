"""The console's ASGI application: the routes of every page, static files, and the security headers.

Pages are rendered on the server (Jinja2) and every action is a plain HTML form, so the
console works without JavaScript; htmx (served from web/static, no CDN) only refreshes the
inbox by itself. Database work runs in Starlette's thread pool, apart from the chat's own
database thread (AppContext.in_database), so staff polling never queues a student's turn.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from core.app.context import AppContext
from web import oidc, ops, pages, pages_admin, sign_in
from web.desk import HERE, Desk, SecurityHeaders
from web.telegram_probe import TelegramProbe

__all__ = ["build_app"]


def build_app(ctx: AppContext) -> Starlette:
    routes = [
        *sign_in.routes(),
        *oidc.routes(),
        *pages.routes(),
        *pages_admin.routes(),
        *ops.routes(),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        Route("/", lambda request: RedirectResponse("/inbox", status_code=303)),
    ]
    app = Starlette(routes=routes)
    app.state.desk = Desk(ctx)
    app.state.telegram_probe = TelegramProbe(ctx)
    app.state.metrics = CollectorRegistry()
    app.state.metrics.register(ops.DatabaseCollector(ctx))
    app.add_middleware(SecurityHeaders)
    return app
