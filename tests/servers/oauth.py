"""A local OAuth2 authorization server for the tests: issues tokens and answers introspection.

`POST /token` is the client-credentials grant (RFC 6749 4.4) that the `generic` provider
calls; `POST /introspect` is token introspection (RFC 7662) as Dovecot's oauth2 passdb asks it
(`introspection_mode = post`). Tokens live `ttl` seconds, may be revoked, and each client id
stands for one mailbox (the `username` introspection returns, which Dovecot checks against
the XOAUTH2 user). Every request is recorded, so a test can count token requests.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["IssuedToken", "OAuthServer"]


@dataclass
class IssuedToken:
    value: str
    username: str
    expires_at: float
    revoked: bool = False

    @property
    def active(self) -> bool:
        return not self.revoked and time.time() < self.expires_at


@dataclass
class OAuthServer:
    """Start with `start()`; `clients` maps client id -> (secret, mailbox username)."""

    clients: dict[str, tuple[str, str]] = field(default_factory=dict)
    ttl: float = 3600.0
    host: str = "127.0.0.1"
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # The next token request is answered with this (status, JSON body) instead, once.
    fail_next: tuple[int, dict[str, Any]] | None = None
    _server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def token_url(self) -> str:
        return f"http://{self.host}:{self.port}/token"

    @property
    def introspection_url(self) -> str:
        return f"http://{self.host}:{self.port}/introspect"

    def token_requests(self) -> int:
        return sum(1 for path, _ in self.requests if path == "/token")

    def issued_for(self, username: str) -> list[IssuedToken]:
        return [t for t in self.tokens.values() if t.username == username]

    def revoke_all(self) -> None:
        for token in self.tokens.values():
            token.revoked = True

    def issue(self, username: str, ttl: float | None = None) -> IssuedToken:
        token = IssuedToken(secrets.token_urlsafe(24), username, time.time() + (self.ttl if ttl is None else ttl))
        self.tokens[token.value] = token
        return token

    def start(self) -> OAuthServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                return None

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                owner.requests.append((self.path, form))
                if self.path == "/token":
                    self._answer(*owner._token(form))
                elif self.path == "/introspect":
                    self._answer(200, owner._introspect(form))
                else:
                    self._answer(404, {"error": "not_found"})

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="oauth-server", daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.fail_next is not None:
            answer, self.fail_next = self.fail_next, None
            return answer
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        client = self.clients.get(form.get("client_id", ""))
        if client is None or not secrets.compare_digest(client[0], form.get("client_secret", "")):
            return 401, {"error": "invalid_client", "error_description": "client authentication failed"}
        token = self.issue(client[1])
        return 200, {"access_token": token.value, "token_type": "Bearer", "expires_in": int(self.ttl)}

    def _introspect(self, form: dict[str, str]) -> dict[str, Any]:
        token = self.tokens.get(form.get("token", ""))
        if token is None or not token.active:
            return {"active": False}
        return {"active": True, "username": token.username, "exp": int(token.expires_at)}
