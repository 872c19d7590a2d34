"""OAuth2 access tokens for the mail connections (SASL XOAUTH2): fetched, cached, refreshed.

Microsoft 365 accepts only tokens over IMAP and SMTP; Google Workspace prefers them. A token
source fetches a token from the configured provider (`MLEG_MAIL_OAUTH__PROVIDER`), keeps it in
memory and fetches a new one `refresh_margin_seconds` before it expires. A login refused with
a cached token asks for a fresh one once (`fresh=True`); the caller never loops on it.

- microsoft: the client-credentials flow of an Entra ID application, through MSAL;
- google: a service account with domain-wide delegation impersonating the mailbox, through
  google-auth (a token per mailbox, since the token names it);
- generic: any token endpoint with client credentials (RFC 6749 4.4), through httpx.

No secret or token is ever logged: errors carry the provider's own error text only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from core.app.clock import Clock
from core.app.settings_sections import MailOAuthSettings

__all__ = [
    "GOOGLE_SCOPE",
    "MICROSOFT_SCOPE",
    "AccessToken",
    "GenericTokenSource",
    "GoogleTokenSource",
    "MailLoginError",
    "MicrosoftTokenSource",
    "TokenError",
    "TokenSource",
    "make_token_source",
    "shared_token_source",
]

log = logging.getLogger(__name__)

# Exchange Online's IMAP/SMTP permissions (IMAP.AccessAsApp, SMTP.SendAsApp) sit on this resource.
MICROSOFT_SCOPE = "https://outlook.office365.com/.default"
MICROSOFT_AUTHORITY = "https://login.microsoftonline.com/"
# Gmail's IMAP and SMTP take only the full-access scope.
GOOGLE_SCOPE = "https://mail.google.com/"
# A provider that states no lifetime: assume the usual hour, refreshed early like any other.
DEFAULT_LIFETIME_SECONDS = 3600


class TokenError(RuntimeError):
    """No token could be had; the message is the provider's own explanation (no secrets)."""


class MailLoginError(RuntimeError):
    """The mail server refused the login even with a freshly fetched token."""


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    expires_at: datetime
    issued_at: datetime | None = None


@dataclass
class TokenStatus:
    """The last token request's outcome, for `mleg status` and `mleg mail check`."""

    ok: bool | None = None
    detail: str = "no token requested yet"
    at: datetime | None = None


class TokenSource(ABC):
    """A provider's tokens, cached per mailbox when the provider's tokens name one."""

    provider: str = ""
    per_mailbox: bool = False

    def __init__(self, settings: MailOAuthSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.status = TokenStatus()
        self._cache: dict[str, AccessToken] = {}
        self._lock = asyncio.Lock()

    def _key(self, mailbox: str) -> str:
        return mailbox.lower() if self.per_mailbox else ""

    def renew_at(self, token: AccessToken) -> datetime:
        """When to stop using `token`: the refresh margin before it expires, but never earlier
        than half its life, so a provider's short tokens do not turn every call into a request."""
        margin = timedelta(seconds=self.settings.refresh_margin_seconds)
        if token.issued_at is not None:
            margin = min(margin, (token.expires_at - token.issued_at) / 2)
        return token.expires_at - margin

    def _fresh_enough(self, token: AccessToken) -> bool:
        return self.renew_at(token) > self.clock.now()

    async def token(self, mailbox: str, *, fresh: bool = False) -> AccessToken:
        """A token for `mailbox` that lives past the refresh margin; `fresh` skips the cache."""
        async with self._lock:
            cached = self._cache.get(self._key(mailbox))
            if cached is not None and not fresh and self._fresh_enough(cached):
                return cached
            try:
                token = await self._fetch(mailbox)
            except TokenError as exc:
                self.status = TokenStatus(False, str(exc), self.clock.now())
                raise
            self._cache[self._key(mailbox)] = token
            self.status = TokenStatus(True, f"token valid until {token.expires_at:%Y-%m-%d %H:%M} UTC",
                                      self.clock.now())
            log.info("mail OAuth2 (%s): new access token, valid until %s", self.provider,
                     token.expires_at.isoformat(timespec="seconds"))
            return token

    def forget(self, mailbox: str) -> None:
        """Drop the cached token (the server refused it): the next `token()` fetches one."""
        self._cache.pop(self._key(mailbox), None)

    def _expiry(self, expires_in: Any) -> datetime:
        try:
            seconds = float(expires_in)
        except (TypeError, ValueError):
            seconds = DEFAULT_LIFETIME_SECONDS
        return self.clock.now() + timedelta(seconds=max(seconds, 0.0))

    @abstractmethod
    async def _fetch(self, mailbox: str) -> AccessToken: ...


class GenericTokenSource(TokenSource):
    """Client credentials at `MLEG_MAIL_OAUTH__TOKEN_URL` (client_secret_post)."""

    provider = "generic"

    def __init__(self, settings: MailOAuthSettings, clock: Clock,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(settings, clock)
        self._transport = transport

    async def _fetch(self, mailbox: str) -> AccessToken:
        s = self.settings
        form = {"grant_type": "client_credentials", "client_id": s.client_id or "",
                "client_secret": s.client_secret.get_secret_value() if s.client_secret else ""}
        if s.scopes:
            form["scope"] = " ".join(s.scopes)
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=s.timeout_seconds) as client:
                response = await client.post(s.token_url or "", data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise TokenError(f"token endpoint {s.token_url} unreachable: {type(exc).__name__}: {exc}") from exc
        body = _json_object(response.text)
        token = body.get("access_token")
        if response.status_code == 200 and isinstance(token, str) and token:
            return AccessToken(token, self._expiry(body.get("expires_in")), self.clock.now())
        raise TokenError(f"token endpoint answered HTTP {response.status_code}: {_oauth_error(body, response.text)}")


class MicrosoftTokenSource(TokenSource):
    """An Entra ID application's token for Exchange Online (client credentials, through MSAL)."""

    provider = "microsoft"

    def __init__(self, settings: MailOAuthSettings, clock: Clock, http_client: Any = None) -> None:
        super().__init__(settings, clock)
        # MSAL's own HTTP client is `requests`; tests hand in one that answers locally.
        self._http_client = http_client
        self._app: Any = None

    def _application(self) -> Any:
        if self._app is None:
            import msal

            s = self.settings
            credential: Any
            if s.client_secret is not None:
                credential = s.client_secret.get_secret_value()
            else:
                credential = {"private_key": _read(s.certificate_file, "MLEG_MAIL_OAUTH__CERTIFICATE_FILE"),
                              "thumbprint": s.certificate_thumbprint}
            extra = {"http_client": self._http_client} if self._http_client is not None else {}
            self._app = msal.ConfidentialClientApplication(
                s.client_id, client_credential=credential, authority=MICROSOFT_AUTHORITY + (s.tenant_id or ""),
                timeout=s.timeout_seconds, **extra)
        return self._app

    def _acquire(self) -> dict[str, Any]:
        try:
            result = self._application().acquire_token_for_client(scopes=self.settings.scopes or [MICROSOFT_SCOPE])
        except ValueError as exc:
            # MSAL raises for a tenant it cannot discover (a wrong MLEG_MAIL_OAUTH__TENANT_ID).
            raise TokenError(f"Microsoft Entra ID: {exc} (MLEG_MAIL_OAUTH__TENANT_ID is "
                             f"{self.settings.tenant_id!r})") from exc
        except Exception as exc:  # requests' connection errors and the like
            raise TokenError(f"Microsoft Entra ID unreachable: {type(exc).__name__}: {exc}") from exc
        return dict(result or {})

    async def _fetch(self, mailbox: str) -> AccessToken:
        result = await asyncio.to_thread(self._acquire)
        token = result.get("access_token")
        if isinstance(token, str) and token:
            return AccessToken(token, self._expiry(result.get("expires_in")), self.clock.now())
        raise TokenError(f"Microsoft Entra ID refused: {_oauth_error(result, '')}")


class GoogleTokenSource(TokenSource):
    """A service account's token for one mailbox (domain-wide delegation, through google-auth)."""

    provider = "google"
    per_mailbox = True

    def __init__(self, settings: MailOAuthSettings, clock: Clock, request: Any = None) -> None:
        super().__init__(settings, clock)
        # google-auth's transport callable; tests hand in one that answers locally.
        self._request = request

    def _refresh(self, mailbox: str) -> tuple[str, datetime | None]:
        from google.auth import exceptions as google_exceptions
        from google.oauth2 import service_account

        path = self.settings.service_account_file or ""
        try:
            info = json.loads(_read(path, "MLEG_MAIL_OAUTH__SERVICE_ACCOUNT_FILE"))
            credentials = service_account.Credentials.from_service_account_info(
                info, scopes=self.settings.scopes or [GOOGLE_SCOPE], subject=mailbox)
        except (ValueError, KeyError) as exc:
            raise TokenError(f"MLEG_MAIL_OAUTH__SERVICE_ACCOUNT_FILE {path}: not a service account key "
                             f"({type(exc).__name__}: {exc})") from exc
        request = self._request
        if request is None:
            from google.auth.transport.requests import Request

            request = Request()
        try:
            credentials.refresh(request)
        except google_exceptions.RefreshError as exc:
            # e.g. "unauthorized_client: Client is unauthorized ...": delegation not granted.
            raise TokenError(f"Google refused: {exc.args[0] if exc.args else exc}") from exc
        except google_exceptions.TransportError as exc:
            raise TokenError(f"Google unreachable: {exc}") from exc
        return str(credentials.token), credentials.expiry

    async def _fetch(self, mailbox: str) -> AccessToken:
        token, expiry = await asyncio.to_thread(self._refresh, mailbox)
        if expiry is None:
            return AccessToken(token, self._expiry(None), self.clock.now())
        # google-auth keeps expiry as a naive UTC datetime.
        return AccessToken(token, expiry.replace(tzinfo=UTC) if expiry.tzinfo is None else expiry, self.clock.now())


def _read(path: str | None, setting: str) -> str:
    if not path:
        raise TokenError(f"{setting} is not set")
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenError(f"{setting} {path}: cannot read it ({exc.strerror})") from exc


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _oauth_error(body: dict[str, Any], raw: str) -> str:
    """RFC 6749 5.2's `error` and `error_description`, or the start of a body that has neither."""
    error, description = body.get("error"), body.get("error_description")
    if error or description:
        return ": ".join(str(part) for part in (error, description) if part)
    return raw.strip()[:200] or "no explanation given"


def make_token_source(settings: MailOAuthSettings, clock: Clock) -> TokenSource:
    if settings.provider == "microsoft":
        return MicrosoftTokenSource(settings, clock)
    if settings.provider == "google":
        return GoogleTokenSource(settings, clock)
    if settings.provider == "generic":
        return GenericTokenSource(settings, clock)
    raise TokenError("MLEG_MAIL_OAUTH__PROVIDER is not set (microsoft, google or generic)")


_shared: dict[tuple[int, int], TokenSource] = {}


def shared_token_source(settings: MailOAuthSettings, clock: Clock) -> TokenSource:
    """One source per settings object and clock, so IMAP and SMTP of a process share its tokens."""
    key = (id(settings), id(clock))
    source = _shared.get(key)
    # An id may be reused once its object is gone: the source keeps its own settings to compare.
    if source is None or source.settings is not settings or source.clock is not clock:
        source = _shared[key] = make_token_source(settings, clock)
    return source
