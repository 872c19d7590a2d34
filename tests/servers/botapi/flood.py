"""Telegram's flood control: at most so many messages per window to one chat, to a group, overall.

Off unless ``enforce_rate_limits``; the limits are the state's ``per_chat_*``, ``group_*``
and ``global_*`` attributes, so a test can tighten them.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from tests.servers.botapi.errors import ApiError
from tests.servers.botapi.state import StandInState


def check_rate(s: StandInState, chat: dict[str, Any]) -> None:
    """Count one send to ``chat``, or answer 429 with the seconds until it would be allowed."""
    if not s.enforce_rate_limits:
        return
    now = time.monotonic()
    chat_id = chat["id"]
    if chat["type"] == "private":
        limit, window = s.per_chat_limit, s.per_chat_window
    else:
        limit, window = s.group_limit, s.group_window
    recent = s._send_times.setdefault(chat_id, deque())
    while recent and recent[0] <= now - window:
        recent.popleft()
    glob = s._global_send_times
    while glob and glob[0] <= now - s.global_window:
        glob.popleft()
    waits = []
    if len(recent) >= limit:
        waits.append(recent[0] + window - now)
    if len(glob) >= s.global_limit:
        waits.append(glob[0] + s.global_window - now)
    if waits:
        retry_after = max(1, math.ceil(max(waits)))
        raise ApiError(
            429,
            f"Too Many Requests: retry after {retry_after}",
            {"retry_after": retry_after},
        )
    recent.append(now)
    glob.append(now)
