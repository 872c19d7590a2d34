"""The support mailbox and SMTP with OAuth2 access tokens (SASL XOAUTH2), against a real Dovecot.

Dovecot checks each token at a local RFC 7662 introspection endpoint (its oauth2 passdb); the
same local server issues the tokens through the `generic` provider, so a token it revoked or
let expire is one Dovecot really refuses.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.app.clock import FixedClock, SystemClock
from core.app.context import AppContext
from core.app.health import read_health
from core.messaging import sending
from core.storage.db import make_engine
from core.storage.models import InboundMail, OutboxMessage
from mail.channel import SmtpChannel
from mail.frontend import MailFrontend
from mail.oauth import MailLoginError, shared_token_source
from tests.cli_helpers import cli_environment, run
from tests.factories import build_ctx, make_settings
from tests.mail_samples.kit import sample
from tests.servers.dovecot import DovecotServer
from tests.servers.fixtures import SmtpServerFactory, _started_dovecot
from tests.servers.oauth import OAuthServer
from tests.servers.smtp_relay import SmtpRelay

CLIENT_ID, CLIENT_SECRET = "mleg-support-app", "app-secret-for-tests-only"


@pytest.fixture(scope="module")
def oauth() -> Iterator[OAuthServer]:
    server = OAuthServer().start()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _fresh_oauth(oauth: OAuthServer) -> None:
    oauth.ttl, oauth.fail_next = 3600.0, None
    oauth.clients.clear()
    oauth.requests.clear()


@pytest.fixture(scope="module")
def dovecot_oauth(oauth: OAuthServer) -> Iterator[DovecotServer]:
    """A Dovecot whose XOAUTH2 logins are checked at `oauth`'s introspection endpoint."""
    yield from _started_dovecot(DovecotServer(oauth2_introspection_url=oauth.introspection_url))


def _ctx(tmp_path: Path, sqlite_url: str, clock: FixedClock | SystemClock, oauth: OAuthServer,
         dovecot: DovecotServer, mailbox: str, smtp: SmtpRelay | None = None, **oauth_settings: object) -> AppContext:
    oauth.clients[CLIENT_ID] = (CLIENT_SECRET, mailbox)
    smtp_settings: dict[str, object] = {"sender": mailbox}
    if smtp is not None:
        smtp_settings |= {"host": smtp.host, "port": smtp.port, "security": "none", "auth": "xoauth2",
                          "username": mailbox}
    settings = make_settings(
        tmp_path, database_url=sqlite_url,
        imap={"host": dovecot.host, "port": dovecot.imap_port, "security": "none", "auth": "xoauth2",
              "username": mailbox, "idle_timeout_seconds": 30},
        smtp=smtp_settings,
        mail_oauth={"provider": "generic", "token_url": oauth.token_url, "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET, "scopes": "mail.read,mail.send"} | oauth_settings,
        university={"help_desk_email": mailbox},
    )
    return build_ctx(settings, make_engine(sqlite_url), clock)  # type: ignore[arg-type]


def _question(dovecot: DovecotServer, mailbox: str, n: int) -> str:
    student = dovecot.new_user()
    dovecot.deliver(mailbox, sample("win1250_question.eml", support=mailbox, n=str(n), sender=student))
    return student


async def test_the_mailbox_is_read_with_a_token_from_the_generic_provider(
    tmp_path: Path, sqlite_url: str, clock: FixedClock, oauth: OAuthServer, dovecot_oauth: DovecotServer,
) -> None:
    mailbox = dovecot_oauth.new_user(prefix="support")
    ctx = _ctx(tmp_path, sqlite_url, clock, oauth, dovecot_oauth, mailbox)
    _question(dovecot_oauth, mailbox, 1)

    report = await MailFrontend(ctx).process_once()

    assert report.stored == 1 and len(report.flagged) == 1
    [(path, form)] = oauth.requests[:1]
    assert path == "/token" and form["grant_type"] == "client_credentials"
    assert form["client_id"] == CLIENT_ID and form["scope"] == "mail.read mail.send"
    # Dovecot asked the introspection endpoint about the token we sent: it was checked, not trusted.
    assert [p for p, _ in oauth.requests].count("/introspect") == 1
    with Session(ctx.engine) as session:
        [health] = read_health(session, "imap")
        assert health.ok and "XOAUTH2" in health.detail
    # A second cycle reuses the cached token.
    await MailFrontend(ctx).process_once()
    assert oauth.token_requests() == 1


async def test_a_revoked_token_is_replaced_once_and_a_refused_fresh_one_gives_up(
    tmp_path: Path, sqlite_url: str, clock: FixedClock, oauth: OAuthServer, dovecot_oauth: DovecotServer,
) -> None:
    mailbox = dovecot_oauth.new_user(prefix="support")
    ctx = _ctx(tmp_path, sqlite_url, clock, oauth, dovecot_oauth, mailbox)
    await MailFrontend(ctx).process_once()
    oauth.revoke_all()  # e.g. an administrator revoked the app's sessions: the cached token is dead

    _question(dovecot_oauth, mailbox, 2)
    report = await MailFrontend(ctx).process_once()

    assert report.stored == 1
    assert oauth.token_requests() == 2  # the first, and one replacement

    # Now every token the provider gives is already expired: one fresh try, then a clear error, no loop.
    oauth.revoke_all()
    oauth.ttl = 0
    with pytest.raises(MailLoginError, match="refused with a fresh token"):
        await MailFrontend(ctx).process_once()
    assert oauth.token_requests() == 3
    with Session(ctx.engine) as session:
        [health] = read_health(session, "imap")
        assert not health.ok and "refused" in health.detail


async def test_the_provider_s_refusal_is_said_with_its_own_words(
    tmp_path: Path, sqlite_url: str, clock: FixedClock, oauth: OAuthServer, dovecot_oauth: DovecotServer,
) -> None:
    mailbox = dovecot_oauth.new_user(prefix="support")
    ctx = _ctx(tmp_path, sqlite_url, clock, oauth, dovecot_oauth, mailbox, client_secret="wrong-secret")

    with pytest.raises(Exception, match="invalid_client: client authentication failed") as caught:
        await MailFrontend(ctx).process_once()
    assert "wrong-secret" not in str(caught.value)
    with Session(ctx.engine) as session:
        [health] = read_health(session, "imap")
        assert not health.ok and "invalid_client" in health.detail and "wrong-secret" not in health.detail


@pytest.mark.process
async def test_a_token_expiring_during_idle_is_replaced_and_nothing_is_lost_or_answered_twice(
    tmp_path: Path, sqlite_url: str, oauth: OAuthServer,
) -> None:
    """Tokens live 4 s (renewed 2 s before): mail keeps arriving across several token lifetimes.

    A Dovecot of its own: the shared one delays logins from an address after the other tests'
    deliberate failures (its auth penalty), and a delay longer than a token's life would refuse it.
    """
    oauth.ttl = 4
    dovecot_oauth = DovecotServer(oauth2_introspection_url=oauth.introspection_url)
    dovecot_oauth.start()
    mailbox = dovecot_oauth.new_user(prefix="support")
    ctx = _ctx(tmp_path, sqlite_url, SystemClock(), oauth, dovecot_oauth, mailbox, refresh_margin_seconds=2)
    reader = MailFrontend(ctx)
    await reader.start()
    try:
        students = []
        for n in range(6):
            students.append(_question(dovecot_oauth, mailbox, 10 + n))
            await asyncio.sleep(1.5)
        deadline = time.monotonic() + 30
        while True:
            with Session(ctx.engine) as session:
                stored = session.exec(select(InboundMail)).all()
                if len(stored) == 6 and all(m.status != "new" for m in stored):
                    break
            assert time.monotonic() < deadline, f"only {len(stored)} of 6 mails handled"
            await asyncio.sleep(0.2)
    finally:
        await reader.stop()
        dovecot_oauth.stop()
    assert oauth.token_requests() >= 3, "the session was not renewed as its tokens expired"
    with Session(ctx.engine) as session:
        answers = session.exec(select(OutboxMessage).where(OutboxMessage.channel == "email")).all()
    assert sorted(a.recipient for a in answers) == sorted(students)  # each answered, once


async def test_smtp_sends_with_xoauth2_and_replaces_a_refused_token_once(
    tmp_path: Path, sqlite_url: str, clock: FixedClock, oauth: OAuthServer, dovecot_oauth: DovecotServer,
    smtp_server_factory: SmtpServerFactory,
) -> None:
    def valid(user: str, token: str) -> bool:
        issued = oauth.tokens.get(token)
        return issued is not None and issued.active and issued.username == user

    relay = smtp_server_factory(relay=False, xoauth2=valid)
    mailbox = dovecot_oauth.new_user(prefix="support")
    ctx = _ctx(tmp_path, sqlite_url, clock, oauth, dovecot_oauth, mailbox, smtp=relay)
    _question(dovecot_oauth, mailbox, 3)
    await MailFrontend(ctx).process_once()
    channel = SmtpChannel(ctx.settings, ctx.clock)

    sent = await sending.drain_once(ctx.engine, ctx.box, channel="email", now=ctx.clock.now, deliver=channel.deliver)
    assert sent == 1 and relay.xoauth2_logins == [mailbox]
    assert oauth.token_requests() == 1  # IMAP and SMTP share one token of the same mailbox

    # A revoked token: refused (535), one fresh token, sent.
    oauth.revoke_all()
    _question(dovecot_oauth, mailbox, 4)
    await MailFrontend(ctx).process_once()
    sent = await sending.drain_once(ctx.engine, ctx.box, channel="email", now=ctx.clock.now, deliver=channel.deliver)
    assert sent == 1 and len(relay.messages) == 2

    # Tokens that never work: the row stays pending (the message is not at fault), error said.
    tokens = shared_token_source(ctx.settings.mail_oauth, ctx.clock)
    _question(dovecot_oauth, mailbox, 5)
    await MailFrontend(ctx).process_once()
    oauth.revoke_all()
    oauth.ttl = 0
    tokens.forget(mailbox)
    before = oauth.token_requests()
    await sending.drain_once(ctx.engine, ctx.box, channel="email", now=ctx.clock.now, deliver=channel.deliver)
    assert oauth.token_requests() - before == 2  # the cached one was gone: one fetch, one fresh retry
    with Session(ctx.engine) as session:
        [row] = session.exec(select(OutboxMessage).where(OutboxMessage.status == "pending")).all()
    assert row.last_error is not None and "refused with a fresh token" in row.last_error


@pytest.mark.process
async def test_mail_check_and_status_say_which_login_works_and_hide_the_secrets(
    tmp_path: Path, sqlite_url: str, oauth: OAuthServer, dovecot_oauth: DovecotServer,
    smtp_server_factory: SmtpServerFactory,
) -> None:
    mailbox = dovecot_oauth.new_user(prefix="support")
    oauth.clients[CLIENT_ID] = (CLIENT_SECRET, mailbox)
    relay = smtp_server_factory(relay=False, xoauth2=lambda user, token: token in oauth.tokens)
    _question(dovecot_oauth, mailbox, 6)
    env = cli_environment(
        tmp_path, sqlite_url,
        MLEG_IMAP__HOST=dovecot_oauth.host, MLEG_IMAP__PORT=str(dovecot_oauth.imap_port),
        MLEG_IMAP__SECURITY="none", MLEG_IMAP__AUTH="xoauth2", MLEG_IMAP__USERNAME=mailbox,
        MLEG_SMTP__HOST=relay.host, MLEG_SMTP__PORT=str(relay.port), MLEG_SMTP__SECURITY="none",
        MLEG_SMTP__AUTH="xoauth2", MLEG_SMTP__USERNAME=mailbox, MLEG_SMTP__SENDER=mailbox,
        MLEG_MAIL_OAUTH__PROVIDER="generic", MLEG_MAIL_OAUTH__TOKEN_URL=oauth.token_url,
        MLEG_MAIL_OAUTH__CLIENT_ID=CLIENT_ID, MLEG_MAIL_OAUTH__CLIENT_SECRET=CLIENT_SECRET,
    )

    checked = await asyncio.to_thread(run, ["mail", "check"], env)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    imap_line, smtp_line = checked.stdout.splitlines()
    assert imap_line.startswith("imap  ok") and f"logged in as {mailbox}" in imap_line
    assert "holds 1 message" in imap_line
    assert smtp_line.startswith("smtp  ok") and "XOAUTH2" in smtp_line and relay.xoauth2_logins == [mailbox]
    assert not relay.messages  # a check sends nothing
    status = await asyncio.to_thread(run, ["status"], env)
    assert "xoauth2 via generic" in status.stdout and "client secret ******" in status.stdout
    assert "imap.login: ok" in status.stdout and "smtp.login: ok" in status.stdout
    assert CLIENT_SECRET not in status.stdout + checked.stdout + checked.stderr + status.stderr

    # The provider refuses the client: exit 1, the provider's words, and status remembers it.
    env["MLEG_MAIL_OAUTH__CLIENT_SECRET"] = "not-the-secret"
    failed = await asyncio.to_thread(run, ["mail", "check", "--json"], env)
    assert failed.returncode == 1
    results = {r["connection"]: r for r in json.loads(failed.stdout)}
    assert results["imap"]["ok"] is False and "invalid_client" in results["imap"]["detail"]
    status = await asyncio.to_thread(run, ["status"], env)
    assert "imap.login: FAILING since" in status.stdout and "invalid_client" in status.stdout
