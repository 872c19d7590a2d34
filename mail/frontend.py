"""The support-mailbox reader (`mleg serve` front-end "mail"): IMAP in, stored, processed, flagged.

One cycle (`process_once`): select the mailbox, check UIDVALIDITY, fetch every UID above
the last one stored (RFC822.SIZE first: over the limit, only the head is fetched), store
each raw message (commit), process the stored ones (one commit each), and only then flag
them \\Seen (or move them to `imap.processed_mailbox`).

`imap.security` picks the link: tls (TLS from the first byte), starttls (plain, upgraded
before LOGIN; a server that does not offer STARTTLS is refused, never used in clear) or none.
`imap.auth` picks the login: a password (LOGIN), or an OAuth2 access token (SASL XOAUTH2,
mail.oauth). A session logged in with a token is renewed before the token expires, so a
server that checks tokens during a session (Exchange Online) never drops us mid-IDLE.

Between cycles it waits in IDLE when the server offers it, else it polls. A stalled IDLE
(the connection dead without a FIN, a known aioimaplib trap: `wait_server_push` then waits
forever) is cut by a watchdog: every wait has a deadline, IDLE is renewed every
`idle_timeout_seconds` with a NOOP to prove the link, and any failure reconnects with an
exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

import aioimaplib
from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.app.errors import ConfigurationError
from core.app.health import HealthRecorder
from core.storage.models import InboundMail
from core.support.faq import Faq
from mail.imap import (
    COMMAND_TIMEOUT,
    ImapError,
    ImapTlsError,
    authenticate_xoauth2,
    close,
    fail_fast_on_connection_loss,
    fetch_bodies,
    fetch_head,
    fetch_sizes,
    ok,
)
from mail.inbound import Fetched, ProcessedMail, mailbox_state, process_pending, store_fetched
from mail.oauth import AccessToken, MailLoginError, TokenError, TokenSource, shared_token_source

__all__ = ["CycleReport", "MailFrontend"]

log = logging.getLogger(__name__)

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
# Over the size limit we read only this much of the body: the text part comes first in practice.
HEAD_BYTES = 256 * 1024
MAX_BACKOFF = 300.0
GREETING_TIMEOUT = 10.0
# Messages per UID FETCH, and the most body bytes one FETCH may bring in (25 MB mails come alone).
FETCH_BATCH = 50
FETCH_BATCH_BYTES = 4 * 1024 * 1024


@dataclass
class CycleReport:
    """What one cycle did: UIDs stored, duplicates skipped, processing results, UIDs flagged."""

    stored: int = 0
    duplicates: int = 0
    processed: list[ProcessedMail] = field(default_factory=list)
    flagged: list[int] = field(default_factory=list)


class MailFrontend:
    """Reads the support mailbox; `process_once()` is one complete, restartable cycle."""

    name = "mail"

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.imap
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._imap: aioimaplib.IMAP4 | None = None
        self._processing: asyncio.Future[list[ProcessedMail]] | None = None
        self.cycles = 0  # for tests and `mleg status`-like probes: cycles completed
        self.health = HealthRecorder(ctx.engine, ctx.clock)
        # The token the current session logged in with (XOAUTH2 only): renew the session before it dies.
        self._session_token: AccessToken | None = None

    @property
    def faq(self) -> Faq:
        """The context's FAQ (core.app.context): trained once per process, shared with the chat and the console."""
        return self.ctx.faq

    def enabled(self) -> bool:
        return bool(self.settings.host)

    # --- connection -------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file)

    async def connect(self) -> aioimaplib.IMAP4:
        """A logged-in connection (no mailbox selected): what `mleg mail check` uses."""
        return await self._connect()

    async def _connect(self) -> aioimaplib.IMAP4:
        s = self.settings
        if s.security == "tls":
            imap: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(host=s.host or "", port=s.port, timeout=COMMAND_TIMEOUT,
                                                          ssl_context=self._tls_context())
        else:
            imap = aioimaplib.IMAP4(host=s.host or "", port=s.port, timeout=COMMAND_TIMEOUT)
        fail_fast_on_connection_loss(imap)
        try:
            await self._greet_and_login(imap)
        except ssl.SSLError as exc:
            close(imap)
            reason = getattr(exc, "verify_message", None) or exc.reason or exc
            raise ImapTlsError(f"TLS with {s.host}:{s.port} failed ({reason}); "
                               f"is MLEG_IMAP__CA_FILE the CA that signed the server's certificate?") from exc
        except BaseException:
            close(imap)
            raise
        return imap

    async def _greet_and_login(self, imap: aioimaplib.IMAP4) -> None:
        s = self.settings
        # aioimaplib waits for the greeting on a state condition that a lost connection never
        # wakes; a server greets at once, so a short deadline here means "not answering".
        await asyncio.wait_for(imap.wait_hello_from_server(), GREETING_TIMEOUT)
        if s.security == "starttls":
            await self._starttls(imap)
        if s.auth == "xoauth2":
            await self._login_xoauth2(imap)
            return
        password = s.password.get_secret_value() if s.password else ""
        ok(await imap.login(s.username or "", password), "LOGIN")

    def _tokens(self) -> TokenSource:
        return shared_token_source(self.ctx.settings.mail_oauth, self.ctx.clock)

    async def _login_xoauth2(self, imap: aioimaplib.IMAP4) -> None:
        """Log in with the cached token; refused, once more with a fresh one; refused again, give up."""
        user = self.settings.username or ""
        tokens = self._tokens()
        try:
            token = await tokens.token(user)
            response = await authenticate_xoauth2(imap, user, token.value)
            if response.result != "OK":
                log.warning("support mailbox: XOAUTH2 login refused with the cached token; fetching a new one")
                tokens.forget(user)
                token = await tokens.token(user, fresh=True)
                response = await authenticate_xoauth2(imap, user, token.value)
        except TokenError as exc:
            self.health.record("imap.login", False, f"token request failed: {exc}")
            raise
        if response.result != "OK":
            detail = b" ".join(bytes(line) for line in response.lines if not bytes(line).startswith(b"+")).decode(
                errors="replace")
            self.health.record("imap.login", False, f"XOAUTH2 login refused: {detail[:300]}")
            raise MailLoginError(f"XOAUTH2 login as {user} refused with a fresh token: {detail[:300]} "
                                 "(is the application granted access to this mailbox?)")
        self._session_token = token
        self.health.record("imap.login", True, f"XOAUTH2 as {user} ({tokens.provider})")

    def _session_renew_at(self) -> datetime | None:
        if self._session_token is None:
            return None
        return self._tokens().renew_at(self._session_token)

    async def _starttls(self, imap: aioimaplib.IMAP4) -> None:
        """Upgrade the plain connection to TLS before any credential crosses it (RFC 3501 6.2.1, RFC 2595).

        aioimaplib knows the command but cannot upgrade: its protocol object stays, and only
        its transport is swapped for the TLS transport asyncio builds on the same socket, so
        the connection-loss callback keeps working on the upgraded connection.
        """
        s = self.settings
        protocol = imap.protocol
        if not imap.has_capability("STARTTLS"):
            # Never fall back to plain: a server (or a man in the middle stripping the
            # capability) would then receive the password in clear.
            raise ConfigurationError(f"MLEG_IMAP__SECURITY=starttls but {s.host}:{s.port} does not offer "
                                     "STARTTLS; refusing to log in in clear")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        ok(await asyncio.wait_for(protocol.execute(command), COMMAND_TIMEOUT), "STARTTLS")
        if protocol.incomplete_line or protocol.current_command is not None:
            # Bytes after the OK arrived in clear and would be read as if they came over TLS
            # (the STARTTLS command injection of CVE-2011-0411): not a server to trust.
            raise ImapError("STARTTLS: the server sent data after its OK, before TLS began")
        protocol.transport = await protocol.loop.start_tls(
            protocol.transport, protocol, self._tls_context(), server_hostname=s.host,
            ssl_handshake_timeout=COMMAND_TIMEOUT)
        # RFC 3501 6.2.1: what the server said before TLS is forgotten and asked again.
        await asyncio.wait_for(protocol.capability(), COMMAND_TIMEOUT)

    async def _select(self, imap: aioimaplib.IMAP4) -> int:
        response = ok(await imap.select(self.settings.mailbox), f"SELECT {self.settings.mailbox}")
        for line in response.lines:
            if isinstance(line, bytes | bytearray):
                match = _UIDVALIDITY.search(bytes(line))
                if match:
                    return int(match.group(1))
        raise ImapError("SELECT gave no UIDVALIDITY")

    @staticmethod
    async def _logout(imap: aioimaplib.IMAP4) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(imap.logout(), 5)

    # --- one cycle --------------------------------------------------------------------

    async def _fetch_all(self, imap: aioimaplib.IMAP4, uids: list[int]) -> AsyncIterator[list[Fetched]]:
        """The messages in UID order, one list per FETCH command: small messages FETCH_BATCH at a
        time (and at most FETCH_BATCH_BYTES per command, so memory stays bounded), an over-size
        one alone and head only."""
        for start in range(0, len(uids), FETCH_BATCH):
            chunk = uids[start:start + FETCH_BATCH]
            sizes = await fetch_sizes(imap, chunk)
            batch: list[int] = []
            batch_bytes = 0
            # A UID the server no longer knows was expunged since SEARCH: nothing there to lose.
            chunk = [uid for uid in chunk if uid in sizes]
            for position, uid in enumerate(chunk):
                size = sizes[uid]
                oversize = size > self.settings.max_message_bytes
                if not oversize:
                    batch.append(uid)
                    batch_bytes += size
                last = position == len(chunk) - 1
                if batch and (oversize or last or batch_bytes >= FETCH_BATCH_BYTES):
                    bodies = await fetch_bodies(imap, batch)
                    fetched: list[Fetched] = []
                    for done in batch:
                        raw = bodies.pop(done, None)
                        if raw is None:
                            raise ImapError(f"FETCH {done} returned no message")
                        fetched.append(Fetched(done, raw, sizes.get(done) or len(raw)))
                    del bodies
                    yield fetched
                    del fetched  # a big message should not stay referenced while the next is fetched
                    batch, batch_bytes = [], 0
                if oversize:
                    yield [Fetched(uid, await fetch_head(imap, uid, HEAD_BYTES), size)]

    async def _new_uids(self, imap: aioimaplib.IMAP4, last_uid: int) -> list[int]:
        response = ok(await imap.uid_search(f"UID {last_uid + 1}:*", charset=None), "SEARCH")
        uids: list[int] = []
        for line in response.lines:
            if isinstance(line, bytes | bytearray):
                uids += [int(x) for x in bytes(line).split() if x.isdigit()]
        # "n:*" always matches the highest UID, even one below n (RFC 3501 6.4.8).
        return sorted(u for u in set(uids) if u > last_uid)

    async def _mark_done(self, imap: aioimaplib.IMAP4, uids: list[int]) -> None:
        if not uids:
            return
        uid_set = ",".join(str(u) for u in sorted(uids))
        ok(await imap.uid("store", uid_set, "+FLAGS", r"(\Seen)"), "STORE")
        target = self.settings.processed_mailbox
        if target:
            if imap.has_capability("MOVE"):
                ok(await imap.uid("move", uid_set, target), "MOVE")
            else:
                ok(await imap.uid("copy", uid_set, target), "COPY")
                ok(await imap.uid("store", uid_set, "+FLAGS", r"(\Deleted)"), "STORE")
                if imap.has_capability("UIDPLUS"):
                    ok(await imap.uid("expunge", uid_set), "EXPUNGE")

    async def _unflagged_done(self, imap: aioimaplib.IMAP4, uidvalidity: int, last_uid: int) -> list[int]:
        """UIDs already handled in the database but not yet flagged (a crash after the commit)."""
        if last_uid == 0:
            return []
        response = ok(await imap.uid_search(f"UID 1:{last_uid} UNSEEN", charset=None), "SEARCH")
        unseen = {int(x) for line in response.lines if isinstance(line, bytes | bytearray)
                  for x in bytes(line).split() if x.isdigit()}
        if not unseen:
            return []
        with Session(self.ctx.engine) as session:
            handled = session.exec(select(InboundMail.uid).where(
                InboundMail.mailbox == self.settings.mailbox, InboundMail.uidvalidity == uidvalidity,
                col(InboundMail.uid).in_(sorted(unseen)), InboundMail.status != "new",
            )).all()
        return sorted(set(handled))

    async def _cycle(self, imap: aioimaplib.IMAP4) -> CycleReport:
        report = CycleReport()
        mailbox = self.settings.mailbox
        uidvalidity = await self._select(imap)
        last_uid = mailbox_state(self.ctx, mailbox, uidvalidity)
        duplicates: list[int] = []
        async for fetched in self._fetch_all(imap, await self._new_uids(imap, last_uid)):
            # One commit per FETCH (mail.inbound.store_fetched): the crash story is per message's.
            results = store_fetched(self.ctx, mailbox=mailbox, uidvalidity=uidvalidity, fetched=fetched)
            for item, stored in zip(fetched, results, strict=True):
                if stored.duplicate:
                    report.duplicates += 1
                    duplicates.append(item.uid)
                else:
                    report.stored += 1
            del fetched, results  # a big message should not stay referenced while the next is fetched
        report.processed = await self._process_stored()
        # Flags only after the commits above: a crash before this line leaves them unseen,
        # and the next cycle finds them handled in the database and flags them then.
        pending = await self._unflagged_done(imap, uidvalidity, mailbox_state(self.ctx, mailbox, uidvalidity))
        to_flag = sorted(set(pending) | set(duplicates))
        await self._mark_done(imap, to_flag)
        report.flagged = to_flag
        self.cycles += 1
        return report

    async def _process_stored(self) -> list[ProcessedMail]:
        """process_pending in a thread, never two at once.

        A cycle cut off by its deadline cannot stop its thread: it runs on. The next cycle
        waits for it instead of starting a second pass over the same mail beside it. The
        shield keeps the running pass's future pending (not cancelled) until it really ends.
        """
        running = self._processing
        if running is not None and not running.done():
            with contextlib.suppress(Exception):  # its mails are recorded; its report was the cut cycle's
                await asyncio.shield(running)
        # The FAQ is read in the thread: the first read trains the understanding (seconds of CPU),
        # which must not happen on the event loop (`mleg serve` trains it at start-up anyway).
        self._processing = asyncio.ensure_future(asyncio.to_thread(lambda: process_pending(self.ctx, self.faq)))
        return await asyncio.shield(self._processing)

    async def process_once(self) -> CycleReport:
        """Connect, run one cycle, log out: what a test or a cron-like caller uses."""
        imap = await self._connect()
        try:
            return await self._cycle(imap)
        finally:
            await self._logout(imap)

    # --- the long-running loop --------------------------------------------------------

    async def _wait_for_mail(self, imap: aioimaplib.IMAP4) -> None:
        """IDLE until the server pushes something (or the renewal time), else sleep a poll interval."""
        if not imap.has_capability("IDLE"):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.poll_interval_seconds)
            return
        renew = self.settings.idle_timeout_seconds
        renew_at = self._session_renew_at()
        if renew_at is not None:
            # Leave IDLE in time to log in again before the token expires.
            renew = max(1.0, min(renew, (renew_at - self.ctx.clock.now()).total_seconds()))
        idle = await asyncio.wait_for(imap.idle_start(timeout=renew), COMMAND_TIMEOUT)
        try:
            stop = asyncio.ensure_future(self._stopping.wait())
            push = asyncio.ensure_future(imap.wait_server_push(timeout=renew + 5))
            # The watchdog: whatever aioimaplib does, this wait ends by `renew + 30` seconds.
            await asyncio.wait({stop, push}, timeout=renew + 30, return_when=asyncio.FIRST_COMPLETED)
            for task in (stop, push):
                task.cancel()
        finally:
            if imap.has_pending_idle():
                imap.idle_done()
            await asyncio.wait_for(idle, COMMAND_TIMEOUT)
        # A NOOP proves the link is alive before we trust it for another IDLE.
        ok(await asyncio.wait_for(imap.noop(), COMMAND_TIMEOUT), "NOOP")

    async def _run(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            imap: aioimaplib.IMAP4 | None = None
            try:
                imap = await self._connect()
                self._imap = imap
                while not self._stopping.is_set():
                    report = await asyncio.wait_for(self._cycle(imap), COMMAND_TIMEOUT * 10)
                    backoff = 1.0
                    if self._token_due():
                        log.info("support mailbox: the session's access token is due for renewal; logging in again")
                        break
                    if report.stored or report.duplicates:
                        # Mail that arrived while this cycle worked was announced to the cycle's own
                        # commands, not to an IDLE that has not begun: an IDLE now would wait for the
                        # next mail or the server's keepalive (minutes). Look again first.
                        continue
                    await self._wait_for_mail(imap)
            except asyncio.CancelledError:
                raise
            except ConfigurationError:
                log.exception("support mailbox reader stopped: configuration")
                return
            except Exception as exc:
                log.warning("support mailbox: %s: %s; reconnecting in %.0f s", type(exc).__name__,
                            exc or "no answer in time", backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
            finally:
                if imap is not None:
                    await self._logout(imap)
                self._imap = None
                self._session_token = None

    def _token_due(self) -> bool:
        renew_at = self._session_renew_at()
        return renew_at is not None and renew_at <= self.ctx.clock.now()

    async def start(self) -> None:
        if not self.settings.authserv_id:
            log.warning("MLEG_IMAP__AUTHSERV_ID is not set: no support-mail sender can be proven, so no mail "
                        "joins an earlier ticket (each opens its own, marked unverified for staff)")
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="mail-frontend")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 15)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
            self._task = None
