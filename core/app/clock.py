"""The one injected clock and randomness source, so tests and `--now` move time without sleeping."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["WARSAW", "Clock", "FixedClock", "RandomSource", "SystemClock", "ensure_utc"]

WARSAW = ZoneInfo("Europe/Warsaw")


def ensure_utc(moment: datetime) -> datetime:
    """Naive datetimes (as SQLite returns them) are UTC by our storage convention."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class Clock:
    """Source of the current instant (UTC) and the local date in Warsaw."""

    def now(self) -> datetime:  # pragma: no cover - overridden
        raise NotImplementedError

    def today(self) -> date:
        """The calendar date in Europe/Warsaw, where the semester boundaries are defined."""
        return self.now().astimezone(WARSAW).date()


class SystemClock(Clock):
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class FixedClock(Clock):
    """A clock that only moves when told to; tests and `--now` use it."""

    current: datetime = field(default_factory=lambda: datetime(2026, 10, 1, 10, 0, tzinfo=UTC))

    def __post_init__(self) -> None:
        self.current = ensure_utc(self.current)

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        self.current = self.current + (delta or timedelta(**kwargs))
        return self.current

    def set(self, moment: datetime) -> None:
        self.current = ensure_utc(moment)


@dataclass
class RandomSource:
    """Randomness for codes; tests inject a seeded `choice` to get reproducible output."""

    choice: Callable[[str], str] = secrets.choice

    def string(self, alphabet: str, length: int) -> str:
        return "".join(self.choice(alphabet) for _ in range(length))
