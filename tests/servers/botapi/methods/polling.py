"""getUpdates: long polling, offsets that confirm updates, and the 409s of a second poller."""

from __future__ import annotations

import itertools
import time
from typing import Any

from tests.servers.botapi.errors import ApiError
from tests.servers.botapi.state import DEFAULT_UPDATE_TYPES, StandInState
from tests.servers.botapi.wire import Files, Params


def _api_getUpdates(s: StandInState, p: Params, f: Files, token: str) -> Any:
    offset = p.get("offset")
    limit = max(1, min(100, int(p.get("limit") or 100)))
    timeout = max(0.0, float(p.get("timeout") or 0))
    allowed = p.get("allowed_updates")
    deadline = time.monotonic() + timeout
    with s._cond:
        if s._webhook.get("url"):
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        s._poll_generation += 1
        generation = s._poll_generation
        s._cond.notify_all()
        if isinstance(allowed, list):
            s._allowed_updates = frozenset(allowed) if allowed else DEFAULT_UPDATE_TYPES
        if isinstance(offset, int):
            if offset < 0:
                while len(s._updates) > -offset:
                    s._updates.popleft()
            elif s.confirm_offsets:
                while s._updates and s._updates[0]["update_id"] < offset:
                    s._updates.popleft()
        while True:
            if s._stopping:
                return []
            if generation != s._poll_generation:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only "
                    "one bot instance is running",
                )
            # updates of kinds the bot did not ask for are dropped, as Telegram does
            for update in list(s._updates):
                kind = next(k for k in update if k != "update_id")
                if kind not in s._allowed_updates:
                    s._updates.remove(update)
            since = offset if isinstance(offset, int) and offset > 0 else 0
            batch = list(itertools.islice((u for u in s._updates if u["update_id"] >= since), limit))
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0:
                s._deliveries.update(u["update_id"] for u in batch)
                return batch
            s._cond.wait(remaining)


METHODS = (_api_getUpdates,)
