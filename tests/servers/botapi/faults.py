"""Faults a test injects: the next calls of a method answer an error (a 429, a 5xx, a 403...),
or are carried out at once and answered late (a slow network)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tests.servers.botapi.errors import ApiError
from tests.servers.botapi.state import POLLING_METHODS, StandInState


class FaultInjection(StandInState):
    """Test-side: plan errors for the next calls."""

    def force_retry_after(
        self, count: int = 1, retry_after: int = 1, methods: Iterable[str] | None = None
    ) -> None:
        """The next ``count`` calls (of ``methods``; default any but getUpdates) answer 429."""
        self.fail_next(
            methods,
            429,
            f"Too Many Requests: retry after {retry_after}",
            count=count,
            parameters={"retry_after": retry_after},
        )

    def fail_next(
        self,
        methods: str | Iterable[str] | None,
        error_code: int,
        description: str,
        *,
        count: int = 1,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        """The next ``count`` calls of ``methods`` (None: any but getUpdates) answer an error."""
        wanted = [methods] if isinstance(methods, str) else methods
        with self._cond:
            self._forced.append(
                {
                    "methods": None if wanted is None else {m.lower() for m in wanted},
                    "remaining": count,
                    "error": (error_code, description, parameters),
                }
            )

    def delay_answers(self, methods: str | Iterable[str], seconds: float, *, count: int = 1) -> None:
        """The next ``count`` calls of ``methods`` are carried out at once (a message is sent) and
        answered ``seconds`` later: the client has it in flight meanwhile."""
        wanted = [methods] if isinstance(methods, str) else methods
        with self._cond:
            self._delayed.append({"methods": {m.lower() for m in wanted}, "remaining": count, "seconds": seconds})


def answer_delay(s: StandInState, method: str) -> float:
    """Seconds to hold this call's answer back, if a delay is planned for ``method`` (``_cond`` held)."""
    for delayed in s._delayed:
        if method.lower() in delayed["methods"]:
            delayed["remaining"] -= 1
            if delayed["remaining"] <= 0:
                s._delayed.remove(delayed)
            return float(delayed["seconds"])
    return 0.0


def apply_forced(s: StandInState, method: str) -> None:
    """Raise the planned error if one is due for ``method`` (call with ``_cond`` held)."""
    for forced in s._forced:
        methods = forced["methods"]
        if methods is None and method in POLLING_METHODS:
            continue
        if methods is not None and method.lower() not in methods:
            continue
        forced["remaining"] -= 1
        if forced["remaining"] <= 0:
            s._forced.remove(forced)
        code, description, parameters = forced["error"]
        raise ApiError(code, description, parameters)
