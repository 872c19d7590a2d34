"""How `mleg serve` and `mleg chat` find the front-ends without core importing them.

Front-ends and channel senders register in `pyproject.toml` under the entry-point
groups `mleg.frontends` and `mleg.channels`, and connection checks (`mleg mail check`) under
`mleg.checks`; core only knows these protocols.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from core.app.context import AppContext
    from core.messaging.outgoing import OutgoingMessage
    from core.messaging.sending import DeliveryResult
    from core.storage.models import OutboxMessage

__all__ = ["ChannelSender", "CheckResult", "Frontend", "load_channels", "load_check", "load_frontend", "load_frontends"]

log = logging.getLogger(__name__)


@runtime_checkable
class Frontend(Protocol):
    """A long-running front-end (Telegram bot, support mailbox reader)."""

    name: str

    def enabled(self) -> bool:
        """True when its settings are present; a disabled front-end is not started."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@runtime_checkable
class ChannelSender(Protocol):
    """Delivers outbox rows of one channel ("email", "telegram", ...)."""

    channel: str
    # Deliveries per second this channel may make; the drainer paces itself by it.
    rate_per_second: float

    async def deliver(self, row: OutboxMessage, message: OutgoingMessage) -> DeliveryResult: ...

    async def close(self) -> None: ...


def _load(entry: EntryPoint) -> Any:
    try:
        return entry.load()
    except ImportError as exc:
        # An installation without that front-end's dependencies still runs the rest.
        log.error("cannot load %s %s: %s", entry.group, entry.name, exc)
        return None


def load_frontends(ctx: AppContext) -> list[Frontend]:
    found: list[Frontend] = []
    for entry in entry_points(group="mleg.frontends"):
        factory = _load(entry)
        if factory is None:
            continue
        frontend = factory(ctx)
        if frontend.enabled():
            found.append(frontend)
        else:
            log.info("front-end %s not configured; not started", entry.name)
    return found


def load_frontend(ctx: AppContext, name: str) -> Frontend | None:
    """The front-end registered as `name` (e.g. `mleg web`), whether or not its settings enable it."""
    for entry in entry_points(group="mleg.frontends", name=name):
        factory = _load(entry)
        return None if factory is None else factory(ctx)  # type: ignore[no-any-return]
    return None


def load_channels(ctx: AppContext, only: set[str] | None = None) -> dict[str, ChannelSender]:
    senders: dict[str, ChannelSender] = {}
    for entry in entry_points(group="mleg.channels"):
        if only is not None and entry.name not in only:
            continue
        factory = _load(entry)
        if factory is None:
            continue
        sender = factory(ctx)
        if sender is not None:
            senders[sender.channel] = sender
    return senders


@dataclass(frozen=True)
class CheckResult:
    """One connection checked: ok True/False, or None when it is not configured."""

    name: str
    ok: bool | None
    detail: str


def load_check(name: str) -> Callable[[AppContext], Awaitable[list[CheckResult]]] | None:
    """The check registered as `name` in `mleg.checks`, or None when it is not installed."""
    for entry in entry_points(group="mleg.checks", name=name):
        return _load(entry)  # type: ignore[no-any-return]
    return None
