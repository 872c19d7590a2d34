"""The application context: settings, storage, clock, randomness and the secret, built once.

It also holds the FAQ with its trained understanding (`faq`), built on first use and then
shared: training takes seconds of CPU, and `mleg serve` runs the chat, the mailbox reader
and the web console on one context, which once trained it for each of them. What is worked
out from the settings alone (`contact`) is built once too: a context's settings never change.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy.engine import Engine

from core.app.catalog import Catalog
from core.app.clock import Clock, RandomSource, SystemClock
from core.app.settings import Settings
from core.credentials.issuer import ActivationIssuer, LocalIssuer
from core.messaging.contact import Contact
from core.security.secrets_box import SecretBox
from core.storage.db import make_engine, upgrade
from core.support.faq import Faq

__all__ = ["DATABASE_THREADS", "AppContext"]

T = TypeVar("T")
# Threads for database work on a server database; SQLite gets one (see AppContext.in_database).
DATABASE_THREADS = 8


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
    _database_threads: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _faq: Faq | None = field(default=None, init=False, repr=False)
    _faq_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.box = SecretBox(self.settings.secret)
        self.catalog = Catalog.load(self.settings.config_layers("messages"))
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

    @property
    def faq(self) -> Faq:
        """The FAQ answers and the understanding, through the configuration layers (MLEG_CONFIG_DIR
        overrides): loaded on first use (a CLI command that never reads text never trains it) and
        then the same object for every front-end on this context."""
        with self._faq_lock:  # two front-ends starting at once must not both train it
            if self._faq is None:
                self._faq = Faq.load(self.settings.config_layers("faq"), credential=self.settings.credential)
            return self._faq

    @functools.cached_property
    def contact(self) -> Contact:
        """Where a student reaches us (the bot's link, the help desk), said in every e-mail."""
        return Contact.of(self.settings)

    def outbox_changed(self, channel: str) -> None:
        """Tell the drainers that `channel` has new rows (a no-op outside `mleg serve`)."""
        for listener in self.outbox_listeners:
            listener(channel)

    async def in_database(self, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run blocking database work off the event loop, on this process's database threads.

        SQLite gets one thread: it has one writer anyway, and every extra thread only adds
        hand-overs of its write lock and of the interpreter lock (bench.chat_throughput: the
        event loop lost most of its time to those with the default pool of six). PostgreSQL
        locks rows, so units for different chats run side by side on DATABASE_THREADS.
        Long batch work (jobs, a mailbox batch) stays on asyncio.to_thread so it never
        queues a chat's turn behind it.
        """
        if self._database_threads is None:
            width = 1 if self.engine.dialect.name == "sqlite" else DATABASE_THREADS
            self._database_threads = ThreadPoolExecutor(max_workers=width, thread_name_prefix="mleg-db")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._database_threads, functools.partial(work, *args, **kwargs))

    def close_database_threads(self) -> None:
        if self._database_threads is not None:
            self._database_threads.shutdown(wait=False)
            self._database_threads = None

    @property
    def activation_window(self) -> timedelta:
        return timedelta(days=self.settings.credential.activation_window_days)
