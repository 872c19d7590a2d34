"""Webhooks: setWebhook, deleteWebhook, getWebhookInfo, and delivering queued updates by POST.

With ``auto_deliver_webhook`` on, a thread POSTs each queued update to the webhook as
Telegram does, oldest first, retrying until the bot's server answers 2xx.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from tests.servers.botapi.errors import ApiError
from tests.servers.botapi.state import DEFAULT_UPDATE_TYPES, StandInState
from tests.servers.botapi.wire import Files, Params, as_bool


def post_update_to_webhook(
    update: dict[str, Any], url: str, secret_token: str | None = None, timeout: float = 5.0
) -> int:
    """POST one update to a bot's webhook the way Telegram does; return the HTTP status."""
    headers = {"Content-Type": "application/json"}
    if secret_token:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret_token
    request = urllib.request.Request(
        url, data=json.dumps(update).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _api_deleteWebhook(s: StandInState, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        s._webhook = {}
        s._webhook_error = None
        if as_bool(p.get("drop_pending_updates")):
            s._updates.clear()
        s._cond.notify_all()
    return True


def _api_setWebhook(s: StandInState, p: Params, f: Files, token: str) -> Any:
    url = str(p.get("url") or "")
    secret = p.get("secret_token")
    if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
        raise ApiError(400, "Bad Request: secret token contains unallowed characters")
    if url and not re.match(r"^https?://", url):
        raise ApiError(400, "Bad Request: bad webhook: Webhook can be set up only on HTTPS")
    with s._cond:
        if as_bool(p.get("drop_pending_updates")):
            s._updates.clear()
        if not url:
            s._webhook = {}
        else:
            s._webhook = {
                "url": url,
                "secret_token": secret,
                "allowed_updates": p.get("allowed_updates"),
                "max_connections": p.get("max_connections", 40),
                "ip_address": p.get("ip_address"),
                "has_custom_certificate": "certificate" in f,
            }
            if isinstance(p.get("allowed_updates"), list):
                s._allowed_updates = frozenset(p["allowed_updates"]) or DEFAULT_UPDATE_TYPES
            if s.auto_deliver_webhook and (
                s._delivery_thread is None or not s._delivery_thread.is_alive()
            ):
                s._delivery_thread = threading.Thread(
                    target=_deliver_webhook_updates,
                    args=(s,),
                    daemon=True,
                    name="botapi-standin-webhook",
                )
                s._delivery_thread.start()
        s._webhook_error = None
        s._cond.notify_all()
    return True


def _deliver_webhook_updates(s: StandInState) -> None:
    while True:
        with s._cond:
            while not s._stopping and not (s._webhook.get("url") and s._updates):
                s._cond.wait(0.5)
            if s._stopping:
                return
            update = s._updates[0]
            url = s._webhook["url"]
            secret = s._webhook.get("secret_token")
        try:
            status = post_update_to_webhook(update, url, secret, timeout=5.0)
            error = None if 200 <= status < 300 else f"Wrong response from the webhook: {status}"
        except OSError as exc:
            error = f"Connection refused: {exc}"
        with s._cond:
            if error is None:
                if s._updates and s._updates[0] is update:
                    s._updates.popleft()
                s._webhook_error = None
            else:
                s._webhook_error = (int(time.time()), error)
                s._cond.wait(0.2)


def _api_getWebhookInfo(s: StandInState, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        hook = s._webhook
        info: dict[str, Any] = {
            "url": hook.get("url", ""),
            "has_custom_certificate": bool(hook.get("has_custom_certificate")),
            "pending_update_count": len(s._updates),
        }
        if hook.get("url"):
            info["max_connections"] = int(hook.get("max_connections") or 40)
            info["ip_address"] = hook.get("ip_address") or "127.0.0.1"
            if hook.get("allowed_updates"):
                info["allowed_updates"] = hook["allowed_updates"]
        if s._webhook_error:
            info["last_error_date"], info["last_error_message"] = s._webhook_error
        return info


METHODS = (_api_setWebhook, _api_deleteWebhook, _api_getWebhookInfo)
