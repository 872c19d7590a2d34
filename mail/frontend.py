"""The support-mailbox reader (`mleg serve` front-end "mail"): IMAP in, stored, processed, flagged.

One cycle (`process_once`): select the mailbox, check UIDVALIDITY, fetch every UID above
the last one stored (RFC822.SIZE first: over the limit, only the head is fetched), store
each raw message (commit), process the stored ones (one commit each), and only then flag
them \\Seen (or move them to `imap.processed_mailbox`).

`imap.security` picks the link: tls (TLS from the first byte), starttls (plain, upgraded
before LOGIN; a server that does not offer STARTTLS is refused, never used in clear) or none.

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

import aioimaplib
from sqlmodel import Session, col, select

from core.context import AppContext
from core.errors import ConfigurationError
from core.faq import Faq
from core.models import InboundMail
from mail.inbound import ProcessedMail, mailbox_state, process_pending, store_raw

__all__ = ["CycleReport", "MailFrontend"]

log = logging.getLogger(__name__)

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_UID = re.compile(rb"UID (\d+)")
# Over the size limit we read only this much of the body: the text part comes first in practice.
HEAD_BYTES = 256 * 1024
MAX_BACKOFF = 300.0
COMMAND_TIMEOUT = 60.0
GREETING_TIMEOUT = 10.0
# Messages per UID FETCH, and the most body bytes one FETCH may bring in (25 MB mails come alone).
FETCH_BATCH = 50
FETCH_BATCH_BYTES = 4 * 1024 * 1024


class ImapError(RuntimeError):
    """The server said NO/BAD, or answered something we cannot read."""


class ImapTlsError(ImapError):
    """The TLS handshake failed (most often: the server's certificate is not trusted)."""


@dataclass
class CycleReport:
    """What one cycle did: UIDs stored, duplicates skipped, processing results, UIDs flagged."""

    stored: int = 0
    duplicates: int = 0
    processed: list[ProcessedMail] = field(default_factory=list)
    flagged: list[int] = field(default_factory=list)


def _ok(response: aioimaplib.Response, what: str) -> aioimaplib.Response:
    if response.result != "OK":
        raise ImapError(f"{what}: {response.result} {response.lines[-1:]!r}")
    return response


def _fail_fast_on_connection_loss(imap: aioimaplib.IMAP4) -> None:
    """End every waiting command the moment the server drops the connection.

    aioimaplib only logs a lost connection: a command in flight (a FETCH when Dovecot
    restarts) then waits out its whole timeout, and later commands are written into the
    closed socket and wait too. Closing them with BYE and moving the protocol to LOGOUT
    (where aioimaplib refuses further commands at once) lets the reader reconnect now.
    """
    protocol = imap.protocol

    def lost(_exc: Exception | None) -> None:
        waiting = list(protocol.pending_async_commands.values())
        if protocol.pending_sync_command is not None:
            waiting.append(protocol.pending_sync_command)
        for command in waiting:
            command.close(b"connection lost", "BYE")
        protocol.state = aioimaplib.LOGOUT
        protocol.idle_queue.put_nowait([b"connection lost"])  # wakes a wait_server_push in IDLE

    protocol.conn_lost_cb = lost


def _close(imap: aioimaplib.IMAP4) -> None:
    """Drop a connection that failed before it was ready (no LOGOUT: nothing to end politely)."""
    imap._client_task.cancel()  # still connecting: stop (a finished task ignores this)
    transport = imap.protocol.transport
    if transport is not None:
        transport.close()


def _literals(response: aioimaplib.Response) -> list[bytes]:
    return [bytes(line) for line in response.lines if isinstance(line, bytearray)]


class MailFrontend:
    """Reads the support mailbox; `process_once()` is one complete, restartable cycle."""

    name = "mail"

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.imap
        self.faq = Faq.load(ctx.settings.config_layers("faq"))
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._imap: aioimaplib.IMAP4 | None = None
        self.cycles = 0  # for tests and `mleg status`-like probes: cycles completed

    def enabled(self) -> bool:
        return bool(self.settings.host)

    # --- connection -------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file)

    async def _connect(self) -> aioimaplib.IMAP4:
        s = self.settings
        if s.security == "tls":
            imap: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(host=s.host or "", port=s.port, timeout=COMMAND_TIMEOUT,
                                                          ssl_context=self._tls_context())
        else:
            imap = aioimaplib.IMAP4(host=s.host or "", port=s.port, timeout=COMMAND_TIMEOUT)
        _fail_fast_on_connection_loss(imap)
        try:
            await self._greet_and_login(imap)
        except ssl.SSLError as exc:
            _close(imap)
            reason = getattr(exc, "verify_message", None) or exc.reason or exc
            raise ImapTlsError(f"TLS with {s.host}:{s.port} failed ({reason}); "
                               f"is MLEG_IMAP__CA_FILE the CA that signed the server's certificate?") from exc
        except BaseException:
            _close(imap)
            raise
        return imap

    async def _greet_and_login(self, imap: aioimaplib.IMAP4) -> None:
        s = self.settings
        # aioimaplib waits for the greeting on a state condition that a lost connection never
        # wakes; a server greets at once, so a short deadline here means "not answering".
        await asyncio.wait_for(imap.wait_hello_from_server(), GREETING_TIMEOUT)
        if s.security == "starttls":
            await self._starttls(imap)
        password = s.password.get_secret_value() if s.password else ""
        _ok(await imap.login(s.username or "", password), "LOGIN")

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
        _ok(await asyncio.wait_for(protocol.execute(command), COMMAND_TIMEOUT), "STARTTLS")
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
        response = _ok(await imap.select(self.settings.mailbox), f"SELECT {self.settings.mailbox}")
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

    async def _sizes(self, imap: aioimaplib.IMAP4, uids: list[int]) -> dict[int, int]:
        """RFC822.SIZE of many UIDs in one command (one round trip, not one per message)."""
        sized = _ok(await imap.uid("fetch", ",".join(str(u) for u in uids), "(UID RFC822.SIZE)"), "FETCH SIZE")
        sizes: dict[int, int] = {}
        for line in sized.lines:
            if isinstance(line, bytes | bytearray):
                uid, size = _UID.search(bytes(line)), _SIZE.search(bytes(line))
                if uid and size:
                    sizes[int(uid.group(1))] = int(size.group(1))
        return sizes

    async def _fetch_head(self, imap: aioimaplib.IMAP4, uid: int) -> bytes:
        """Only the head of an over-size message: its headers and the first HEAD_BYTES of the body."""
        head = _ok(await imap.uid("fetch", str(uid), f"(BODY.PEEK[HEADER] BODY.PEEK[TEXT]<0.{HEAD_BYTES}>)"),
                   "FETCH HEAD")
        return b"".join(_literals(head))

    async def _fetch_bodies(self, imap: aioimaplib.IMAP4, uids: list[int]) -> dict[int, bytes | bytearray]:
        """BODY.PEEK[] of several UIDs in one command, each literal paired with its UID.

        RFC 3501 7.4.2 lets the server put UID before or after the literal, so both are read.
        """
        fetched = _ok(await imap.uid("fetch", ",".join(str(u) for u in uids), "(UID BODY.PEEK[])"), "FETCH")
        bodies: dict[int, bytes | bytearray] = {}
        uid: int | None = None
        literal: bytes | bytearray | None = None
        for line in fetched.lines:
            if isinstance(line, bytearray):
                # Kept as the bytearray aioimaplib read into: a copy would double a 25 MB mail.
                literal = line
            elif isinstance(line, bytes):
                if b" FETCH " in line:  # a new message starts: forget the previous one's pieces
                    uid, literal = None, None
                match = _UID.search(line)
                if match:
                    uid = int(match.group(1))
            if uid is not None and literal is not None:
                bodies[uid] = literal
                uid, literal = None, None
        return bodies

    async def _fetch_all(self, imap: aioimaplib.IMAP4,
                         uids: list[int]) -> AsyncIterator[tuple[int, bytes | bytearray, int]]:
        """(uid, raw, size) in UID order: small messages FETCH_BATCH at a time (and at most
        FETCH_BATCH_BYTES per command, so memory stays bounded), over-size ones head only."""
        for start in range(0, len(uids), FETCH_BATCH):
            chunk = uids[start:start + FETCH_BATCH]
            sizes = await self._sizes(imap, chunk)
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
                    bodies = await self._fetch_bodies(imap, batch)
                    for done in batch:
                        raw = bodies.pop(done, None)
                        if raw is None:
                            raise ImapError(f"FETCH {done} returned no message")
                        yield done, raw, sizes.get(done) or len(raw)
                    del bodies
                    batch, batch_bytes = [], 0
                if oversize:
                    yield uid, await self._fetch_head(imap, uid), size

    async def _new_uids(self, imap: aioimaplib.IMAP4, last_uid: int) -> list[int]:
        response = _ok(await imap.uid_search(f"UID {last_uid + 1}:*", charset=None), "SEARCH")
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
        _ok(await imap.uid("store", uid_set, "+FLAGS", r"(\Seen)"), "STORE")
        target = self.settings.processed_mailbox
        if target:
            if imap.has_capability("MOVE"):
                _ok(await imap.uid("move", uid_set, target), "MOVE")
            else:
                _ok(await imap.uid("copy", uid_set, target), "COPY")
                _ok(await imap.uid("store", uid_set, "+FLAGS", r"(\Deleted)"), "STORE")
                if imap.has_capability("UIDPLUS"):
                    _ok(await imap.uid("expunge", uid_set), "EXPUNGE")

    async def _unflagged_done(self, imap: aioimaplib.IMAP4, uidvalidity: int, last_uid: int) -> list[int]:
        """UIDs already handled in the database but not yet flagged (a crash after the commit)."""
        if last_uid == 0:
            return []
        response = _ok(await imap.uid_search(f"UID 1:{last_uid} UNSEEN", charset=None), "SEARCH")
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
        async for uid, raw, size in self._fetch_all(imap, await self._new_uids(imap, last_uid)):
            stored = store_raw(self.ctx, mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, raw=raw, size=size)
            del raw  # a big message should not stay referenced while the next is fetched
            if stored.duplicate:
                report.duplicates += 1
                duplicates.append(uid)
            else:
                report.stored += 1
        report.processed = await asyncio.to_thread(process_pending, self.ctx, self.faq)
        # Flags only after the commits above: a crash before this line leaves them unseen,
        # and the next cycle finds them handled in the database and flags them then.
        pending = await self._unflagged_done(imap, uidvalidity, mailbox_state(self.ctx, mailbox, uidvalidity))
        to_flag = sorted(set(pending) | set(duplicates))
        await self._mark_done(imap, to_flag)
        report.flagged = to_flag
        self.cycles += 1
        return report

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
        _ok(await asyncio.wait_for(imap.noop(), COMMAND_TIMEOUT), "NOOP")

    async def _run(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            imap: aioimaplib.IMAP4 | None = None
            try:
                imap = await self._connect()
                self._imap = imap
                while not self._stopping.is_set():
                    await asyncio.wait_for(self._cycle(imap), COMMAND_TIMEOUT * 10)
                    backoff = 1.0
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

    async def start(self) -> None:
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
