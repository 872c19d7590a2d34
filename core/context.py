"""The application context: settings, storage, clock, randomness and the secret, built once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.engine import Engine

from core.catalog import Catalog
from core.clock import Clock, RandomSource, SystemClock
from core.db import make_engine, upgrade
from core.issuer import ActivationIssuer, LocalIssuer
from core.secrets_box import SecretBox
from core.settings import Settings

__all__ = ["AppContext"]


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    clock: Clock = field(default_factory=SystemClock)
    random: RandomSource = field(default_factory=RandomSource)
    box: SecretBox = field(init=False)
    catalog: Catalog = field(init=False)
    issuer: ActivationIssuer = field(init=False)
    # `mleg serve` listens here so a chat reply is sent at once, not at the next poll.
    outbox_listeners: list[Callable[[str], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.box = SecretBox(self.settings.secret)
        self.catalog = Catalog.load(self.settings.config_dir / "messages")
        self.issuer = LocalIssuer(self.box, self.random)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        random: RandomSource | None = None,
        engine: Engine | None = None,
        migrate: bool = True,
    ) -> AppContext:
        engine = engine or make_engine(settings.effective_database_url)
        if migrate:
            upgrade(engine)
        return cls(
            settings=settings,
            engine=engine,
            clock=clock or SystemClock(),
            random=random or RandomSource(),
        )

    def outbox_changed(self, channel: str) -> None:
        """Tell the drainers that `channel` has new rows (a no-op outside `mleg serve`)."""
        for listener in self.outbox_listeners:
            listener(channel)

    @property
    def activation_window(self) -> timedelta:
        return timedelta(days=self.settings.credential.activation_window_days)
