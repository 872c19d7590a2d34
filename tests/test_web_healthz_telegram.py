"""/healthz asks the Telegram Bot API itself (getMe, short timeout, cached) against the local stand-in."""

from __future__ import annotations

from pydantic import SecretStr
from starlette.testclient import TestClient

from core.app.context import AppContext
from tests.servers.botapi import DEFAULT_TOKEN, BotApiStandIn
from tests.servers.dovecot import free_port
from web.app import build_app


def _telegram(client: TestClient) -> object:
    answer = client.get("/healthz")
    assert answer.status_code == 200
    return answer.json()["connections"].get("telegram.api")


def _configure(ctx: AppContext, base_url: str, token: str = DEFAULT_TOKEN) -> None:
    ctx.settings.telegram.token = SecretStr(token)
    ctx.settings.telegram.api_base_url = base_url


def test_healthz_asks_telegram_once_per_while(sqlite_ctx: AppContext, api: BotApiStandIn) -> None:
    _configure(sqlite_ctx, api.base_url)
    with TestClient(build_app(sqlite_ctx)) as client:
        first = _telegram(client)
        assert isinstance(first, dict) and first["ok"] is True and "@mleg_test_bot" in first["detail"]
        for _ in range(5):
            assert _telegram(client) == first
    assert len(api.calls("getMe")) == 1  # cached: five more probes, no more requests


def test_healthz_says_telegram_is_unreachable_without_the_token(sqlite_ctx: AppContext) -> None:
    _configure(sqlite_ctx, f"http://127.0.0.1:{free_port()}/bot")  # nobody listens there
    with TestClient(build_app(sqlite_ctx)) as client:
        answer = client.get("/healthz")
    telegram = answer.json()["connections"]["telegram.api"]
    assert telegram["ok"] is False and telegram["detail"] == "getMe failed: ConnectError"
    assert DEFAULT_TOKEN not in answer.text and DEFAULT_TOKEN.split(":")[1] not in answer.text


def test_healthz_says_telegram_refused_the_token(sqlite_ctx: AppContext) -> None:
    with BotApiStandIn(accept_any_token=False) as api:
        _configure(sqlite_ctx, api.base_url, token="7000000002:AAH-another_token_the_api_does_not_know")
        with TestClient(build_app(sqlite_ctx)) as client:
            telegram = _telegram(client)
    assert isinstance(telegram, dict) and telegram["ok"] is False
    assert telegram["detail"].startswith("getMe refused: HTTP 401")


def test_healthz_without_a_bot_asks_nobody(sqlite_ctx: AppContext) -> None:
    sqlite_ctx.settings.telegram.token = None
    with TestClient(build_app(sqlite_ctx)) as client:
        assert _telegram(client) is None
