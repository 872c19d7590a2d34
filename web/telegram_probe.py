"""Whether the Telegram Bot API answers now: `getMe` with a short timeout, its outcome kept a while.

/healthz reports it beside the database's and the mailbox's state. The Bot API is asked at
most once per `CACHE_SECONDS` however many probes (a load balancer, Prometheus' blackbox,
staff) ask at once, and never for longer than `TIMEOUT_SECONDS`, so /healthz stays cheap
and quick even when Telegram is unreachable. The bot token is in the request's URL: it is
never put into the answer or the log (only the error's type is).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from core.app.context import AppContext

__all__ = ["CACHE_SECONDS", "TIMEOUT_SECONDS", "TelegramProbe"]

CACHE_SECONDS = 30.0
TIMEOUT_SECONDS = 3.0


class TelegramProbe:
    def __init__(self, ctx: AppContext, *, cache_seconds: float = CACHE_SECONDS,
                 timeout_seconds: float = TIMEOUT_SECONDS) -> None:
        self.ctx = ctx
        self.cache_seconds = cache_seconds
        self.timeout_seconds = timeout_seconds
        self._last: dict[str, Any] | None = None
        self._last_at = 0.0
        self._lock: asyncio.Lock | None = None

    async def check(self) -> dict[str, Any] | None:
        """{"ok", "detail", "checked_at"}, or None when no bot is configured."""
        telegram = self.ctx.settings.telegram
        if not telegram.token:
            return None
        if self._fresh():
            return self._last
        if self._lock is None:
            self._lock = asyncio.Lock()  # made on the loop that serves the console
        async with self._lock:
            if not self._fresh():  # another request probed while this one waited
                ok, detail = await self._get_me(telegram.api_base_url, telegram.token.get_secret_value())
                self._last = {"ok": ok, "detail": detail, "checked_at": self.ctx.clock.now().isoformat()}
                self._last_at = time.monotonic()
        return self._last

    def _fresh(self) -> bool:
        return self._last is not None and time.monotonic() - self._last_at < self.cache_seconds

    async def _get_me(self, base_url: str, token: str) -> tuple[bool, str]:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_seconds) as client:
                response = await client.get(f"{base_url}{token}/getMe")
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            # Not str(exc): an httpx error names the URL, and the URL carries the token.
            return False, f"getMe failed: {type(exc).__name__}"
        if response.status_code == 200 and answer.get("ok"):
            return True, f"getMe as @{answer.get('result', {}).get('username', '?')}"
        return False, f"getMe refused: HTTP {response.status_code} {str(answer.get('description', ''))[:200]}"
