"""Pytest fixtures for the real loopback mail servers: Dovecot (IMAP/LMTP) and an SMTP relay."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, Protocol

import pytest

from tests.servers.dovecot import DovecotServer, DovecotUnavailable, unavailable_reason
from tests.servers.smtp_relay import DEFAULT_DATA_SIZE_LIMIT, Security, SmtpRelay, generate_certificate

__all__ = [
    "SmtpServerFactory",
    "dovecot",
    "mailbox_user",
    "smtp_server",
    "smtp_server_factory",
]


def _unavailable(reason: str) -> NoReturn:
    # In CI a missing install step must fail loudly, not hide as a skip.
    if os.environ.get("CI") == "true":
        pytest.fail(f"Dovecot unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"Dovecot unavailable: {reason}")


class SmtpServerFactory(Protocol):
    """Signature of the ``smtp_server_factory`` fixture."""

    def __call__(
        self,
        security: Security = "none",
        auth: tuple[str, str] | None = None,
        *,
        relay: bool = True,
        data_size_limit: int = DEFAULT_DATA_SIZE_LIMIT,
        **kwargs: Any,
    ) -> SmtpRelay: ...


def _started_dovecot(server: DovecotServer) -> Iterator[DovecotServer]:
    reason = unavailable_reason()
    if reason is not None:
        _unavailable(reason)
    try:
        server.start()
    except DovecotUnavailable as exc:
        server.stop()
        _unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """A private Dovecot for the whole session (use ``mailbox_user`` for isolation)."""
    yield from _started_dovecot(DovecotServer())


@pytest.fixture(scope="session")
def dovecot_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    """A second private Dovecot that speaks STARTTLS on ``imap_port`` and TLS on ``imaps_port``.

    Its certificate comes from a throwaway CA (``dovecot_tls.tls.ca_cert_path``). A separate
    instance, so the session-wide ``dovecot`` keeps ``ssl = no`` and offers no STARTTLS.
    """
    yield from _started_dovecot(DovecotServer(tls=generate_certificate(tmp_path_factory.mktemp("dovecot-tls"))))


@pytest.fixture
def mailbox_user(dovecot: DovecotServer) -> str:
    """A fresh mailbox address nobody else in the session writes to."""
    return dovecot.new_user()


@pytest.fixture
def smtp_server_factory(dovecot: DovecotServer) -> Iterator[SmtpServerFactory]:
    """Start SMTP relays into ``dovecot`` on demand; all are closed after the test."""
    started: list[SmtpRelay] = []

    def make(
        security: Security = "none",
        auth: tuple[str, str] | None = None,
        *,
        relay: bool = True,
        data_size_limit: int = DEFAULT_DATA_SIZE_LIMIT,
        **kwargs: Any,
    ) -> SmtpRelay:
        server = SmtpRelay(
            dovecot if relay else None,
            security=security,
            auth=auth,
            data_size_limit=data_size_limit,
            **kwargs,
        )
        started.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in started:
            server.close()


@pytest.fixture
def smtp_server(smtp_server_factory: Callable[..., SmtpRelay]) -> SmtpRelay:
    """A plain (no TLS, no AUTH) SMTP server relaying into ``dovecot``."""
    return smtp_server_factory()
