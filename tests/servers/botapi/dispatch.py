"""One HTTP request to one answer: route ``/bot<token>/<method>`` to its method, record the call.

Every request, answered or refused, is recorded as an ``ApiCall`` (what ``calls`` and the
waits read); a 429 is also counted per chat for ``rate_limited_count``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.servers.botapi.errors import ApiError
from tests.servers.botapi.faults import answer_delay, apply_forced
from tests.servers.botapi.methods import HANDLERS
from tests.servers.botapi.methods.files import serve_file
from tests.servers.botapi.records import ApiCall
from tests.servers.botapi.state import SEND_METHODS, TOKEN_RE, StandInState
from tests.servers.botapi.wire import Files, Params, normalize, read_params


def dispatch(
    s: StandInState, http_method: str, raw_path: str, content_type: str, body: bytes
) -> tuple[int, bytes, str]:
    """(HTTP status, body, content type) for one request to the stand-in."""
    parts = urlsplit(raw_path)
    path = unquote(parts.path)
    file_match = re.match(r"^/file/bot([^/]+)/(.+)$", path)
    if file_match:
        return serve_file(s, file_match.group(1), file_match.group(2))
    match = re.match(r"^/bot([^/]*)/([A-Za-z0-9_]+)/?$", path)
    token = match.group(1) if match else ""
    method = match.group(2) if match else ""
    params: Params = {}
    files: Files = {}
    status = 200
    delay = 0.0
    try:
        if not match or not TOKEN_RE.match(token):
            raise ApiError(404, "Not Found")
        if not s.accept_any_token and token != s.token:
            raise ApiError(401, "Unauthorized")
        files = read_params(params, parts.query, content_type, body)
        handler = HANDLERS.get(method.lower())
        if handler is None:
            raise ApiError(404, "Not Found: method not found")
        method = handler.__name__.removeprefix("_api_")
        params = normalize(params)
        with s._cond:
            apply_forced(s, method)
        result = handler(s, params, files, token)
        response: dict[str, Any] = {"ok": True, "result": result}
        with s._cond:
            delay = answer_delay(s, method)
    except ApiError as exc:
        status = exc.code
        response = exc.body()
        if exc.code == 429:
            with s._cond:
                chat = params.get("chat_id") if method in SEND_METHODS else None
                key = chat if isinstance(chat, int) else None
                s._rate_limited[key] = s._rate_limited.get(key, 0) + 1
    with s._cond:
        s._calls.append(
            ApiCall(
                method=method or path,
                params=params,
                files=files,
                token=token,
                http_method=http_method,
                status=status,
                response=response,
                at=time.time(),
            )
        )
        s._cond.notify_all()
    if delay:
        time.sleep(delay)  # done and recorded above; only the answer is late
    return status, json.dumps(response, ensure_ascii=False).encode(), "application/json"
