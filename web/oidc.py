"""Single sign-on through the university's OpenID Connect provider (MLEG_WEB__OIDC__*).

The authorization code flow with PKCE (S256), `state` and `nonce`: the browser goes to the
provider, comes back with a code, and the console exchanges it (with its client secret and
the PKCE verifier) for an ID token, whose signature (the provider's JWKS), issuer, audience,
expiry and nonce are checked (PyJWT) before the account named by `login_claim` is signed in
(web.auth.sign_in_sso). State and verifier wait in a short-lived cookie of their own; the
nonce is derived from the state with the installation's secret, so nothing is stored.

That cookie is SameSite=Lax: the return from the provider is a cross-site navigation, which a
Strict cookie would not come with. For the same reason the callback answers with a page that
moves on to the inbox itself, rather than a redirect: a redirect at the end of a cross-site
chain would arrive without the (Strict) session cookie just set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from core.app.context import AppContext
from web import auth
from web.desk import Desk

__all__ = ["Provider", "routes"]

log = logging.getLogger(__name__)
FLOW_SECONDS = 600
DISCOVERY_TTL = 3600.0


@dataclass
class Provider:
    """The provider's endpoints (discovery document) and signing keys, cached."""

    authorization_endpoint: str
    token_endpoint: str
    jwks: jwt.PyJWKClient
    fetched: float


_providers: dict[str, Provider] = {}


def _provider(ctx: AppContext) -> Provider:
    oidc = ctx.settings.web.oidc
    issuer = (oidc.issuer or "").rstrip("/")
    cached = _providers.get(issuer)
    if cached is not None and time.monotonic() - cached.fetched < DISCOVERY_TTL:
        return cached
    response = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=oidc.timeout_seconds)
    response.raise_for_status()
    document = response.json()
    if document.get("issuer", "").rstrip("/") != issuer:
        raise ValueError("the discovery document names another issuer")
    provider = Provider(authorization_endpoint=document["authorization_endpoint"],
                        token_endpoint=document["token_endpoint"],
                        jwks=jwt.PyJWKClient(document["jwks_uri"], timeout=int(oidc.timeout_seconds)),
                        fetched=time.monotonic())
    _providers[issuer] = provider
    return provider


def _nonce(ctx: AppContext, state: str) -> str:
    return ctx.box.keyed_hash("oidc-nonce", state)[:43]


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _flow_cookie(desk: Desk) -> str:
    return "__Host-mleg-oidc" if desk.ctx.settings.web.secure_cookies else "mleg_oidc"


def _redirect_url(desk: Desk, request: Request) -> str:
    return desk.ctx.settings.web.oidc.redirect_url or str(request.url_for("oidc_callback"))


async def start(request: Request) -> Response:
    desk: Desk = request.app.state.desk
    if not desk.ctx.settings.web.oidc.enabled:
        return desk.render(request, "error.html", 404, message_key="errors.not_found")
    try:
        provider = await desk.db(_provider, desk.ctx)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        log.warning("OIDC provider not reachable: %s", exc)
        return desk.render(request, "error.html", 502, message_key="errors.sso_unavailable")
    oidc = desk.ctx.settings.web.oidc
    state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    query = urlencode({
        "response_type": "code", "client_id": oidc.client_id, "redirect_uri": _redirect_url(desk, request),
        "scope": " ".join(oidc.scopes), "state": state, "nonce": _nonce(desk.ctx, state),
        "code_challenge": _challenge(verifier), "code_challenge_method": "S256",
    })
    response = RedirectResponse(f"{provider.authorization_endpoint}?{query}", status_code=303)
    response.set_cookie(_flow_cookie(desk), f"{state}.{verifier}", max_age=FLOW_SECONDS, path="/",
                        secure=desk.ctx.settings.web.secure_cookies, httponly=True, samesite="lax")
    return response


def _exchange(ctx: AppContext, code: str, verifier: str, redirect_url: str, state: str) -> dict[str, Any]:
    """The code for an ID token, verified; returns its claims (raises on anything wrong)."""
    oidc = ctx.settings.web.oidc
    provider = _provider(ctx)
    secret = oidc.client_secret.get_secret_value() if oidc.client_secret else ""
    response = httpx.post(provider.token_endpoint, timeout=oidc.timeout_seconds, auth=(oidc.client_id or "", secret),
                          data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_url,
                                "code_verifier": verifier})
    response.raise_for_status()
    id_token = response.json()["id_token"]
    key = provider.jwks.get_signing_key_from_jwt(id_token)
    claims: dict[str, Any] = jwt.decode(
        id_token, key.key, algorithms=["RS256", "ES256", "PS256"], audience=oidc.client_id,
        issuer=(oidc.issuer or "").rstrip("/"), options={"require": ["exp", "iat", "iss", "aud", "sub", "nonce"]},
        leeway=60)
    if not hmac.compare_digest(str(claims["nonce"]), _nonce(ctx, state)):
        raise jwt.InvalidTokenError("nonce does not match")
    return claims


async def callback(request: Request) -> Response:
    desk: Desk = request.app.state.desk
    oidc = desk.ctx.settings.web.oidc
    if not oidc.enabled:
        return desk.render(request, "error.html", 404, message_key="errors.not_found")
    flow = request.cookies.get(_flow_cookie(desk), "")
    state, _, verifier = flow.partition(".")
    given = request.query_params.get("state", "")
    code = request.query_params.get("code", "")
    if not (state and verifier and code and auth.tokens_match(given, state)):
        return desk.render(request, "sign_in.html", 403, refused="sign_in.sso_failed", form_token="", next="/inbox",
                           sso=True)
    try:
        claims = await desk.db(_exchange, desk.ctx, code, verifier, _redirect_url(desk, request), state)
    except (httpx.HTTPError, jwt.PyJWTError, KeyError, ValueError) as exc:
        log.warning("OIDC sign-in refused: %s: %s", type(exc).__name__, exc)
        return desk.render(request, "sign_in.html", 403, refused="sign_in.sso_failed", form_token="", next="/inbox",
                           sso=True)
    login = str(claims.get(oidc.login_claim) or "")
    amr = claims.get("amr") or []
    address = request.client.host if request.client else "unknown"
    result = await desk.db(auth.sign_in_sso, desk.ctx, login, [str(a) for a in amr] if isinstance(amr, list) else [],
                           address)
    if result.token is None:
        response = desk.render(request, "sign_in.html", 403, refused=result.refused, form_token="", next="/inbox",
                               sso=True)
    else:
        response = desk.render(request, "signed_in.html", next="/inbox")
        desk.set_cookie(response, desk.session_cookie, result.token)
    response.delete_cookie(_flow_cookie(desk), path="/")
    return response


def routes() -> list[Route]:
    return [Route("/sign-in/oidc", start, methods=["GET"]),
            Route("/sign-in/oidc/callback", callback, methods=["GET"], name="oidc_callback")]
