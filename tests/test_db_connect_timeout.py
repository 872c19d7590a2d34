"""A PostgreSQL server that never answers (a firewall dropping packets) is an error in seconds, not a hang."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from core.storage import db


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never says a word (the TCP handshake is the kernel's)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def _fails_with_timeout(url: str) -> None:
    # Without a timeout libpq waits forever: the test would hang until pytest-timeout ends it.
    engine = db.make_engine(url)
    with pytest.raises(sa.exc.OperationalError, match="timeout"):
        engine.connect()
    engine.dispose()


def test_connecting_to_a_silent_server_times_out(silent_server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "PG_CONNECT_TIMEOUT_SECONDS", 1)
    _fails_with_timeout(f"postgresql://postgres@127.0.0.1:{silent_server}/mleg")


def test_the_urls_own_timeout_wins(silent_server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "PG_CONNECT_TIMEOUT_SECONDS", 3600)
    _fails_with_timeout(f"postgresql://postgres@127.0.0.1:{silent_server}/mleg?connect_timeout=1")
