"""The Microsoft and Google token providers at the boundary they own: the request they build, and
how they take the provider's answers and errors. Their servers cannot be reached from here, so
MSAL and google-auth are handed a transport that answers as Entra ID and Google do.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from core.app.clock import FixedClock
from core.app.errors import ConfigurationError
from core.app.settings_sections import MailOAuthSettings
from mail.oauth import GOOGLE_SCOPE, MICROSOFT_SCOPE, GoogleTokenSource, MicrosoftTokenSource, TokenError
from tests.factories import make_settings

TENANT = "11111111-2222-3333-4444-555555555555"
NOW = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)


class _Response:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code = status
        self.text = json.dumps(body)
        self.headers = {"Content-Type": "application/json"}

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise RuntimeError(f"HTTP {self.status_code}")


class FakeEntraId:
    """Answers MSAL as login.microsoftonline.com does: OIDC discovery, then the token endpoint."""

    def __init__(self, token_answer: tuple[int, dict[str, Any]], tenant_known: bool = True) -> None:
        self.token_answer = token_answer
        self.tenant_known = tenant_known
        self.posts: list[tuple[str, dict[str, str]]] = []

    def get(self, url: str, **_kwargs: Any) -> _Response:
        if "/.well-known/openid-configuration" in url:
            if not self.tenant_known:
                return _Response(400, {"error": "invalid_tenant",
                                       "error_description": f"AADSTS90002: Tenant '{TENANT}' not found."})
            base = f"https://login.microsoftonline.com/{TENANT}"
            return _Response(200, {"token_endpoint": f"{base}/oauth2/v2.0/token",
                                   "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                                   "issuer": f"{base}/v2.0"})
        if url.endswith("/common/discovery/instance"):
            # MSAL asks for the authority's aliases (to look in its cache) after a refusal.
            return _Response(200, {"tenant_discovery_endpoint": "", "api-version": "1.1", "metadata": [{
                "preferred_network": "login.microsoftonline.com", "preferred_cache": "login.windows.net",
                "aliases": ["login.microsoftonline.com", "login.windows.net", "sts.windows.net"]}]})
        return _Response(404, {})

    def post(self, url: str, data: Any = None, **_kwargs: Any) -> _Response:
        form = data if isinstance(data, dict) else {k: v[0] for k, v in parse_qs(data or "").items()}
        self.posts.append((url, form))
        return _Response(*self.token_answer)

    def close(self) -> None:
        return None


def _microsoft(entra: FakeEntraId, **extra: Any) -> MicrosoftTokenSource:
    settings = MailOAuthSettings(provider="microsoft", tenant_id=TENANT, client_id="app-id",
                                 client_secret="s3cret-value", **extra)
    return MicrosoftTokenSource(settings, FixedClock(NOW), http_client=entra)


async def test_microsoft_asks_for_exchange_online_with_client_credentials() -> None:
    entra = FakeEntraId((200, {"token_type": "Bearer", "expires_in": 3599, "access_token": "eyJ0.ms.token"}))
    source = _microsoft(entra)

    token = await source.token("support@uni.example.pl")

    [(url, form)] = entra.posts
    assert url == f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
    assert form["grant_type"] == "client_credentials" and form["client_id"] == "app-id"
    assert form["client_secret"] == "s3cret-value" and form["scope"].split() == [MICROSOFT_SCOPE]
    assert token.value == "eyJ0.ms.token" and token.expires_at == NOW + timedelta(seconds=3599)
    assert source.status.ok is True


@pytest.mark.parametrize(("answer", "tenant_known", "said"), [
    ((401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}),
     True, r"invalid_client: AADSTS7000215: Invalid client secret provided\."),
    ((400, {"error": "unauthorized_client", "error_description": "AADSTS700016: Application with identifier "
            "'app-id' was not found in the directory."}), True, "AADSTS700016"),
    ((200, {}), False, "tenant name or GUID is correct.*MLEG_MAIL_OAUTH__TENANT_ID"),
])
async def test_microsoft_refusals_are_said_in_entra_s_own_words(
    answer: tuple[int, dict[str, Any]], tenant_known: bool, said: str,
) -> None:
    source = _microsoft(FakeEntraId(answer, tenant_known=tenant_known))

    with pytest.raises(TokenError, match=said) as caught:
        await source.token("support@uni.example.pl")

    assert "s3cret-value" not in str(caught.value)
    assert source.status.ok is False and re.search(said, source.status.detail)


@pytest.fixture
def service_account(tmp_path: Path) -> tuple[Path, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "uni-mleg", "private_key_id": "key-1", "private_key": pem,
        "client_email": "mleg@uni-mleg.iam.gserviceaccount.com", "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path, key


class FakeGoogle:
    """google-auth's transport callable, answering as Google's token endpoint does."""

    def __init__(self, answer: tuple[int, dict[str, Any]]) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, str]]] = []

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None, **_: Any) -> Any:
        form = {k: v[0] for k, v in parse_qs(body.decode() if isinstance(body, bytes) else body or "").items()}
        self.calls.append((url, form))
        status, payload = self.answer

        class Response:
            pass

        response = Response()
        response.status = status  # type: ignore[attr-defined]
        response.headers = {"content-type": "application/json"}  # type: ignore[attr-defined]
        response.data = json.dumps(payload).encode()  # type: ignore[attr-defined]
        return response


async def test_google_signs_a_delegation_assertion_for_the_mailbox(
    service_account: tuple[Path, rsa.RSAPrivateKey],
) -> None:
    path, key = service_account
    google = FakeGoogle((200, {"access_token": "ya29.google.token", "expires_in": 3599, "token_type": "Bearer"}))
    source = GoogleTokenSource(MailOAuthSettings(provider="google", service_account_file=str(path)),
                               FixedClock(NOW), request=google)

    token = await source.token("pomoc@uni.example.pl")

    [(url, form)] = google.calls
    assert url == "https://oauth2.googleapis.com/token"
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = jwt.decode(form["assertion"], key.public_key(), algorithms=["RS256"],
                        audience="https://oauth2.googleapis.com/token")
    assert claims["iss"] == "mleg@uni-mleg.iam.gserviceaccount.com"
    assert claims["sub"] == "pomoc@uni.example.pl"  # domain-wide delegation: the mailbox it acts as
    assert claims["scope"] == GOOGLE_SCOPE
    assert token.value == "ya29.google.token"
    # A token per mailbox: another mailbox is another request.
    await source.token("pomoc@uni.example.pl")
    await source.token("inna@uni.example.pl")
    assert len(google.calls) == 2


async def test_google_refusal_and_a_bad_key_file_are_said(
    service_account: tuple[Path, rsa.RSAPrivateKey], tmp_path: Path,
) -> None:
    path, _ = service_account
    google = FakeGoogle((401, {"error": "unauthorized_client", "error_description":
                               "Client is unauthorized to retrieve access tokens using this method, or client "
                               "not authorized for any of the scopes requested."}))
    source = GoogleTokenSource(MailOAuthSettings(provider="google", service_account_file=str(path)),
                               FixedClock(NOW), request=google)
    with pytest.raises(TokenError, match="unauthorized_client"):
        await source.token("pomoc@uni.example.pl")

    broken = tmp_path / "not-a-key.json"
    broken.write_text('{"type": "authorized_user"}')
    source = GoogleTokenSource(MailOAuthSettings(provider="google", service_account_file=str(broken)),
                               FixedClock(NOW), request=google)
    with pytest.raises(TokenError, match=r"MLEG_MAIL_OAUTH__SERVICE_ACCOUNT_FILE .*not a service account key"):
        await source.token("pomoc@uni.example.pl")
    source = GoogleTokenSource(MailOAuthSettings(provider="google", service_account_file=str(tmp_path / "gone")),
                               FixedClock(NOW), request=google)
    with pytest.raises(TokenError, match="cannot read it"):
        await source.token("pomoc@uni.example.pl")


@pytest.mark.parametrize(("oauth", "missing"), [
    ({}, "MLEG_MAIL_OAUTH__PROVIDER"),
    ({"provider": "microsoft", "client_id": "a", "client_secret": "b"}, "MLEG_MAIL_OAUTH__TENANT_ID"),
    ({"provider": "microsoft", "tenant_id": "t", "client_id": "a"}, "CLIENT_SECRET or CERTIFICATE_FILE"),
    ({"provider": "google"}, "MLEG_MAIL_OAUTH__SERVICE_ACCOUNT_FILE"),
    ({"provider": "generic", "client_id": "a", "client_secret": "b"}, "MLEG_MAIL_OAUTH__TOKEN_URL"),
])
def test_xoauth2_without_what_its_provider_needs_is_refused_by_name(
    tmp_path: Path, oauth: dict[str, str], missing: str,
) -> None:
    with pytest.raises(ConfigurationError, match=missing):
        make_settings(tmp_path, imap={"host": "outlook.office365.com", "auth": "xoauth2",
                                      "username": "pomoc@uni.example.pl"}, mail_oauth=oauth)


def test_the_password_default_and_the_missing_username_are_said(tmp_path: Path) -> None:
    assert make_settings(tmp_path, imap={"host": "imap.uni.example.pl"}).imap.auth == "password"
    with pytest.raises(ConfigurationError, match="MLEG_SMTP__USERNAME"):
        make_settings(tmp_path, smtp={"host": "smtp.office365.com", "auth": "xoauth2"},
                      mail_oauth={"provider": "generic", "token_url": "https://idp.example/token",
                                  "client_id": "a", "client_secret": "b"})
