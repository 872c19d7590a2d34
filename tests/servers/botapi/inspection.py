"""Test-side inspection: the calls the bot made, the messages it sent, waits until they come."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tests.servers.botapi.methods.bot import commands_key
from tests.servers.botapi.records import ApiCall, SentMessage
from tests.servers.botapi.state import POLLING_METHODS, StandInState

T = TypeVar("T")


class Inspection(StandInState):
    """Read what the stand-in recorded; every read takes the lock, so any thread may call it.

    The blocking waits (``wait_for_*``) must not run in the bot's event loop: use the
    ``await_*`` twins there.
    """

    # ----------------------------------------------------------------- updates handed out

    def updates_for(self, chat_id: int) -> list[int]:
        """The ids of the updates queued so far from `chat_id` (messages and button presses)."""
        with self._cond:
            return [uid for uid, chat in self._update_chats.items() if chat == chat_id]

    def deliveries(self) -> dict[int, int]:
        """How many times getUpdates handed out each update (more than once: not confirmed in time)."""
        with self._cond:
            return dict(self._deliveries)

    def updates_pending(self) -> int:
        """Updates queued and not yet confirmed by a getUpdates offset (or webhook delivery)."""
        with self._cond:
            return len(self._updates)

    # ----------------------------------------------------------------- calls and messages

    def calls(self, method: str | None = None, *, include_polling: bool = False, since: int = 0) -> list[ApiCall]:
        """Requests answered so far (getUpdates only when asked for or ``include_polling``);
        `since`: only those after the first `since` of all requests (getUpdates included)."""
        with self._cond:
            calls = self._calls[since:]
        if method is not None:
            return [c for c in calls if c.method.lower() == method.lower()]
        if include_polling:
            return calls
        return [c for c in calls if c.method not in POLLING_METHODS]

    def sent_messages(self, chat_id: int | None = None) -> list[SentMessage]:
        """Messages the bot sent successfully, oldest first (edits are applied in place)."""
        with self._cond:
            return [s for s in self._sent if chat_id is None or s.chat_id == chat_id]

    def last_message(self, chat_id: int | None = None) -> SentMessage:
        messages = self.sent_messages(chat_id)
        if not messages:
            raise LookupError(f"no message sent to {chat_id}")
        return messages[-1]

    def wait_for_messages(
        self, chat_id: int | None, count: int = 1, timeout: float = 5.0
    ) -> list[SentMessage]:
        """Block until ``chat_id`` (None: any chat) got ``count`` messages; return them all."""
        return self._wait_for(
            lambda: [s for s in self._sent if chat_id is None or s.chat_id == chat_id],
            count,
            timeout,
            lambda found: (
                f"chat {chat_id}: expected {count} message(s) within {timeout}s, got "
                f"{len(found)}: {[s.text for s in found]!r}; recent calls: "
                f"{[(c.method, c.status) for c in self._calls[-10:]]}"
            ),
        )

    def wait_for_calls(self, method: str, count: int = 1, timeout: float = 5.0) -> list[ApiCall]:
        """Block until ``method`` was called ``count`` times; return those calls."""
        return self._wait_for(
            lambda: [c for c in self._calls if c.method.lower() == method.lower()],
            count,
            timeout,
            lambda found: f"expected {count} {method} call(s) within {timeout}s, got {len(found)}",
        )

    def _wait_for(
        self,
        find: Callable[[], list[T]],
        count: int,
        timeout: float,
        failure: Callable[[list[T]], str],
    ) -> list[T]:
        """Wait (holding the lock between looks) until ``find`` has ``count`` items."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = find()
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(failure(found))
                self._cond.wait(remaining)

    async def await_messages(
        self,
        chat_id: int | None,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - mirrors wait_for_messages
    ) -> list[SentMessage]:
        """:meth:`wait_for_messages` without blocking the event loop (the bot may run in it)."""
        return await asyncio.to_thread(self.wait_for_messages, chat_id, count, timeout)

    async def await_calls(
        self,
        method: str,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - mirrors wait_for_calls
    ) -> list[ApiCall]:
        """:meth:`wait_for_calls` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for_calls, method, count, timeout)

    # ----------------------------------------------------------------- what the bot set up

    def commands(
        self, *, scope: dict[str, Any] | None = None, language_code: str = ""
    ) -> list[dict[str, Any]]:
        """What setMyCommands recorded for this scope (default: BotCommandScopeDefault)."""
        with self._cond:
            return list(self._commands.get(commands_key(scope, language_code), []))

    def all_commands(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Every recorded command list keyed by (scope JSON, language_code)."""
        with self._cond:
            return {k: list(v) for k, v in self._commands.items()}

    @property
    def webhook(self) -> dict[str, Any]:
        """The recorded setWebhook parameters (``url``, ``secret_token``, ...); {} if none."""
        with self._cond:
            return dict(self._webhook)

    def file_bytes(self, file_id: str) -> bytes:
        with self._cond:
            return self._files[file_id][0]

    # ----------------------------------------------------------------- answers not delivered

    def rate_limited_count(self, chat_id: int | None = None) -> int:
        """How many 429 answers were sent (all, or those for a sendX to ``chat_id``)."""
        with self._cond:
            if chat_id is None:
                return sum(self._rate_limited.values())
            return self._rate_limited.get(chat_id, 0)

    @property
    def too_many_requests_sent(self) -> int:
        return self.rate_limited_count()

    @property
    def answers_lost(self) -> int:
        """Requests carried out whose answer never reached the client (the connection was cut,
        e.g. by `stop`): the client cannot know they succeeded, so a resend of each is fair."""
        with self._cond:
            return self._answers_lost

    def reset_records(self) -> None:
        """Forget recorded calls and sent messages (chats, ids and queues stay)."""
        with self._cond:
            self._calls.clear()
            self._sent.clear()
            self._sent_index.clear()
            self._rate_limited.clear()
