"""Single sign-on to the web console through a local OpenID Connect provider (tests/servers/oidc.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr
from sqlmodel import Session, col, select
from starlette.testclient import TestClient

from core.app.context import AppContext
from core.storage.db import unit_of_work
from core.storage.models import AuditEvent
from core.support import staff
from tests.servers.oidc import OidcProvider
from web.app import build_app


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    server = OidcProvider().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(sqlite_ctx: AppContext, provider: OidcProvider) -> Iterator[TestClient]:
    web = sqlite_ctx.settings.web
    web.secure_cookies = False
    web.oidc.issuer, web.oidc.client_id = provider.issuer, provider.client_id
    web.oidc.client_secret = SecretStr(provider.client_secret)
    with TestClient(build_app(sqlite_ctx)) as test_client:
        yield test_client


def _account(ctx: AppContext, login: str, *, admin: bool = False) -> None:
    with unit_of_work(ctx.engine) as session:
        staff.add_account(ctx, session, login, None, role=staff.Role.ADMIN if admin else staff.Role.AGENT,
                          actor="test")


def _sso(client: TestClient) -> httpx.Response:
    """The browser's round trip: to the provider (real HTTP) and back to the callback."""
    start = client.get("/sign-in/oidc", follow_redirects=False)
    assert start.status_code == 303
    back = httpx.get(start.headers["location"], follow_redirects=False)
    assert back.status_code == 302
    return client.get(back.headers["location"].replace("http://testserver", ""), follow_redirects=False)


def _failures(ctx: AppContext) -> list[str]:
    with Session(ctx.engine) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.action == "staff.sign_in_failed")
                              .order_by(col(AuditEvent.id))).all()
    return [json.loads(e.detail)["reason"] for e in events]


def test_an_agent_signs_in_through_the_provider(sqlite_ctx: AppContext, client: TestClient,
                                                provider: OidcProvider) -> None:
    _account(sqlite_ctx, "ola")
    provider.next_user = {"preferred_username": "Ola", "amr": ["pwd"]}
    assert 'id="sso"' in client.get("/sign-in").text
    done = _sso(client)
    assert done.status_code == 200 and 'http-equiv="refresh"' in done.text
    assert "mleg_session=" in done.headers["set-cookie"]
    assert client.get("/inbox", follow_redirects=False).status_code == 200
    [request] = provider.token_requests
    assert request["code_verifier"] and request["grant_type"] == "authorization_code"
    with Session(sqlite_ctx.engine) as session:
        signed_in = session.exec(select(AuditEvent).where(AuditEvent.action == "staff.signed_in")).one()
    assert signed_in.actor == "staff:ola" and json.loads(signed_in.detail) == {"method": "oidc"}


def test_an_sso_only_account_has_no_password(sqlite_ctx: AppContext, client: TestClient) -> None:
    _account(sqlite_ctx, "ola")
    page = client.get("/sign-in").text
    token = page.split('name="csrf" value="')[1].split('"')[0]
    refused = client.post("/sign-in", data={"csrf": token, "login": "ola", "password": "!sso-only", "code": ""})
    assert refused.status_code == 403 and _failures(sqlite_ctx) == ["wrong_password"]


def test_an_account_the_console_does_not_know_is_refused(sqlite_ctx: AppContext, client: TestClient,
                                                        provider: OidcProvider) -> None:
    provider.next_user = {"preferred_username": "stranger"}
    refused = _sso(client)
    assert refused.status_code == 403 and "mleg staff add" in refused.text
    assert client.get("/inbox", follow_redirects=False).status_code == 303
    assert _failures(sqlite_ctx) == ["unknown_account"]


def test_an_admin_needs_a_second_factor_at_the_provider(sqlite_ctx: AppContext, client: TestClient,
                                                       provider: OidcProvider) -> None:
    _account(sqlite_ctx, "kasia", admin=True)
    provider.next_user = {"preferred_username": "kasia", "amr": ["pwd"]}
    assert _sso(client).status_code == 403
    assert _failures(sqlite_ctx) == ["no_mfa"]
    provider.next_user = {"preferred_username": "kasia", "amr": ["pwd", "otp"]}
    assert _sso(client).status_code == 200
    assert client.get("/credentials", follow_redirects=False).status_code == 200


def test_a_callback_with_another_state_is_refused_before_any_exchange(
        sqlite_ctx: AppContext, client: TestClient, provider: OidcProvider) -> None:
    _account(sqlite_ctx, "ola")
    provider.next_user = {"preferred_username": "ola"}
    start = client.get("/sign-in/oidc", follow_redirects=False)
    back = httpx.get(start.headers["location"], follow_redirects=False).headers["location"]
    forged = back.replace("state=", "state=x")
    assert client.get(forged.replace("http://testserver", ""), follow_redirects=False).status_code == 403
    assert provider.token_requests == []
    assert client.get("/inbox", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("tamper", ["audience", "nonce", "key"])
def test_an_id_token_that_does_not_check_out_is_refused(sqlite_ctx: AppContext, client: TestClient,
                                                       provider: OidcProvider, tamper: str) -> None:
    _account(sqlite_ctx, "ola")
    provider.next_user = {"preferred_username": "ola"}
    provider.tamper = tamper
    refused = _sso(client)
    assert refused.status_code == 403 and 'id="refused"' in refused.text
    assert client.get("/inbox", follow_redirects=False).status_code == 303
