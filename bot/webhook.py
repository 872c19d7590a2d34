"""Webhook mode that loses nothing: an update is stored before Telegram gets its 200.

Telegram never sends an update again once the webhook answered it 2xx. python-telegram-bot's
own webhook server answers as soon as the update is queued in memory, so a crash lost what
was queued. Here the endpoint (`WebhookEndpoint`, a small tornado server: tornado comes with
python-telegram-bot[webhooks]) does only this before answering: it compares the secret token
in constant time, and stores the raw update in the database (core.storage.update_store), idempotent
by update_id. A database that cannot store answers 503, and Telegram tries again later.

`UpdateWorker` handles the stored updates through the same path as long polling
(`Application.process_update`, chats side by side, one chat's updates one after another in
update_id order) and marks each handled: a student's turn marks it in its own commit
(bot.student), anything else right after its handlers returned. A `kill -9` therefore loses
nothing: what was acknowledged is stored, and what was not handled is handled after the
restart, before anything newer (the oldest update_id goes first).

Several `mleg serve` behind one webhook URL on PostgreSQL: every one stores what reaches it;
one of them, the holder of the advisory lock TELEGRAM_UPDATES_LOCK, handles them all, so a
chat's turns never run side by side on two servers; when it dies PostgreSQL frees the lock
and another takes over within LOCK_RETRY_SECONDS. A store on PostgreSQL NOTIFYs, and the worker
LISTENs, so an update stored by another server is handled at once. On SQLite (one process)
the worker just runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
import tornado.httpserver
import tornado.web
from cryptography.fernet import InvalidToken as UndecryptableError
from telegram import Update
from telegram.error import TelegramError
from telegram.ext import Application

from bot.events import CHANNEL
from bot.polling import PollingLock, order_key
from core.app.context import AppContext
from core.app.errors import UnreachableError
from core.jobs.leader import TELEGRAM_UPDATES_LOCK
from core.storage import update_store
from core.storage.db import unit_of_work
from core.storage.update_store import StoredRef, Waiting

__all__ = ["SECRET_HEADER", "UpdateWorker", "WebhookEndpoint", "set_webhook"]

log = logging.getLogger(__name__)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# An update is a few kilobytes; a body far beyond that is not one.
MAX_BODY_BYTES = 1024 * 1024
# Storing waits on nothing but the database: threads of its own, so a POST never queues
# behind the turns on the context's database threads.
STORE_THREADS = 4
BATCH = 100
CONCURRENCY = 32
IDLE_SECONDS = 1.0
# How often a server that does not handle updates tries the lock (a take-over waits at most this).
LOCK_RETRY_SECONDS = 2.0
LOCK_CHECK_SECONDS = 10.0
# How often the handling server asks Telegram how its deliveries to us go (getWebhookInfo).
INFO_CHECK_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
# The listener checks this often whether it is to stop; after a failure it tries again after the other.
LISTEN_POLL_SECONDS = 1.0
LISTEN_RETRY_SECONDS = 5.0


class _Hook(tornado.web.RequestHandler):
    """POST /<path>: secret, store, 200. Nothing else happens before the answer."""

    def initialize(self, endpoint: WebhookEndpoint) -> None:
        self.endpoint = endpoint

    async def post(self) -> None:
        given = (self.request.headers.get(SECRET_HEADER) or "").encode()
        if not hmac.compare_digest(given, self.endpoint.secret):
            self.set_status(403)
            return
        update_id = _update_id(self.request.body)
        if update_id is None:
            self.set_status(400)
            return
        try:
            await self.endpoint.store(update_id, self.request.body)
        except Exception as exc:  # the database: Telegram keeps the update and tries again
            log.warning("could not store webhook update %s (%s): answered 503, Telegram retries",
                        update_id, type(exc).__name__)
            self.set_status(503)
            return
        self.set_status(200)


def _update_id(body: bytes) -> int | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    update_id = data.get("update_id") if isinstance(data, dict) else None
    if isinstance(update_id, bool) or not isinstance(update_id, int) or update_id < 0:
        return None
    return update_id


def _access_log(handler: tornado.web.RequestHandler) -> None:
    # Only what went wrong: a line per update would drown the log. Never the body.
    status = handler.get_status()
    if status >= 400:
        log.info("webhook: %s %s answered %d (from %s)", handler.request.method, handler.request.path, status,
                 handler.request.remote_ip)


class WebhookEndpoint:
    """The HTTP endpoint Telegram (through the reverse proxy) POSTs updates to."""

    def __init__(self, ctx: AppContext, *, secret: str, on_stored: Callable[[], None]) -> None:
        self.ctx = ctx
        self.secret = secret.encode()
        self.on_stored = on_stored
        self._server: tornado.httpserver.HTTPServer | None = None
        self._threads = ThreadPoolExecutor(max_workers=STORE_THREADS, thread_name_prefix="mleg-webhook-store")

    async def store(self, update_id: int, raw: bytes) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._threads, lambda: update_store.store(
            self.ctx.engine, self.ctx.box, channel=CHANNEL, update_id=update_id, raw=raw, now=self.ctx.clock.now()))
        self.on_stored()

    async def start(self, *, listen: str, port: int, path: str) -> None:
        app = tornado.web.Application([(f"/{path.strip('/')}", _Hook, {"endpoint": self})],
                                      log_function=_access_log)
        server = tornado.httpserver.HTTPServer(app, max_body_size=MAX_BODY_BYTES, idle_connection_timeout=75)
        try:
            server.listen(port, address=listen)
        except OSError as exc:
            raise UnreachableError(f"the webhook cannot listen on {listen}:{port} ({exc.strerror}): check "
                                   "MLEG_TELEGRAM__WEBHOOK_LISTEN and MLEG_TELEGRAM__WEBHOOK_PORT") from exc
        self._server = server

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.close_all_connections(), STOP_GRACE_SECONDS)
        self._threads.shutdown(wait=True)


async def set_webhook(ctx: AppContext, app: Application, *, url: str, secret: str) -> None:  # type: ignore[type-arg]
    """Point Telegram at us and record the outcome (`mleg status`); refused: one error line."""
    try:
        await app.bot.set_webhook(url=url, secret_token=secret, allowed_updates=Update.ALL_TYPES,
                                  drop_pending_updates=False)
    except TelegramError as exc:
        await ctx.in_database(update_store.record_set, ctx.engine, channel=CHANNEL, url=url,
                              error=exc.message, now=ctx.clock.now())
        raise UnreachableError(f"Telegram refused the webhook {url} ({exc.message}): check "
                               "MLEG_TELEGRAM__WEBHOOK_URL (public HTTPS, reaching this server)") from exc
    await ctx.in_database(update_store.record_set, ctx.engine, channel=CHANNEL, url=url, error=None,
                          now=ctx.clock.now())


class _StoredListener:
    """PostgreSQL: LISTEN for updates stored by any server and wake the worker, on a thread of its own.

    Without it an update stored by another server waits for the worker's next look (IDLE_SECONDS).
    """

    def __init__(self, engine: sa.Engine, wake: Callable[[], None]) -> None:
        self._engine, self._wake = engine, wake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mleg-stored-updates-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=LISTEN_POLL_SECONDS * 5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self._engine.raw_connection()
            except Exception as exc:
                log.warning("cannot listen for stored updates (%s); looking every %.0f s meanwhile",
                            type(exc).__name__, IDLE_SECONDS)
                self._stop.wait(LISTEN_RETRY_SECONDS)
                continue
            try:
                connection = raw.driver_connection
                connection.rollback()  # out of the pool's ping transaction: autocommit needs none open
                connection.autocommit = True
                connection.execute(f"LISTEN {update_store.NOTIFY_CHANNEL}")
                self._wake()  # what was stored before we listened
                while not self._stop.is_set():
                    for _ in connection.notifies(timeout=LISTEN_POLL_SECONDS, stop_after=1):
                        self._wake()
            except Exception as exc:
                log.warning("listening for stored updates stopped (%s); again in %.0f s",
                            type(exc).__name__, LISTEN_RETRY_SECONDS)
                self._stop.wait(LISTEN_RETRY_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    raw.invalidate()  # a LISTENing connection never goes back to the pool
                    raw.close()


class UpdateWorker:
    """Stored updates -> process_update in order per chat -> marked handled; until stopped.

    `until_empty`: stop once nothing waits (long polling uses it to finish what a webhook stored
    before the switch). `handling` says whether this server handles updates now.
    """

    def __init__(self, app: Application, ctx: AppContext, *,  # type: ignore[type-arg]
                 until_empty: bool = False, lock_retry_seconds: float = LOCK_RETRY_SECONDS,
                 check_info: bool = True) -> None:
        self.app, self.ctx = app, ctx
        self.until_empty = until_empty
        self.check_info = check_info
        self._lock_retry = lock_retry_seconds
        self._lock = PollingLock(ctx.engine, TELEGRAM_UPDATES_LOCK, purpose="Telegram updates") \
            if ctx.engine.dialect.name == "postgresql" else None
        self._lock_checked = 0.0
        self._info_checked = 0.0
        self._error_seen: object = None
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._listener: _StoredListener | None = None
        self.handling = False
        self.handled = 0

    def start(self) -> None:
        if self._lock is not None and not self.until_empty:
            loop = asyncio.get_running_loop()
            self._listener = _StoredListener(self.ctx.engine, lambda: loop.call_soon_threadsafe(self._wake.set))
            self._listener.start()
        self._task = asyncio.create_task(self._run(), name="telegram-stored-updates")

    def wake(self) -> None:
        self._wake.set()

    async def wait(self) -> None:
        """Until the worker ends (with `until_empty`: nothing left to handle)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            await asyncio.to_thread(listener.stop)
        task, self._task = self._task, None
        if task is not None:
            # The batch under way finishes (its turns would be rolled back and done again anyway).
            _, late = await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
            for pending in late:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
        lock, self._lock = self._lock, None
        self.handling = False
        if lock is not None:
            await asyncio.to_thread(lock.release)

    async def _lead(self) -> bool:
        if self._lock is None:
            self.handling = True
            return True
        if self.handling and time.monotonic() - self._lock_checked < LOCK_CHECK_SECONDS:
            return True
        try:
            held = await asyncio.to_thread(self._lock.try_acquire)
        except sa.exc.DBAPIError as exc:
            log.warning("cannot reach the database for the Telegram updates lock: %s", type(exc).__name__)
            held = False
        self._lock_checked = time.monotonic()
        # Taking it is logged by Leadership itself ("took the Telegram updates lock").
        if not held and self.handling:
            log.warning("lost the Telegram updates lock: another server handles the stored updates now")
        self.handling = held
        return held

    async def _pause(self, seconds: float, *, clear: bool = False) -> None:
        # Not cleared by default: a wake that came since the last read of the table means
        # something was stored after it, and must not be slept through.
        if clear:
            self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _run(self) -> None:
        while not self._stopping:
            if not await self._lead():
                if self.until_empty:
                    return  # the server that handles updates finishes them
                # Not woken by what is stored (the holder of the lock handles it): only a stop ends the wait.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), self._lock_retry)
                continue
            try:
                self._wake.clear()
                rows = await self.ctx.in_database(update_store.waiting, self.ctx.engine, channel=CHANNEL,
                                                  limit=BATCH)
            except sa.exc.DBAPIError as exc:
                log.warning("cannot read the stored Telegram updates: %s", type(exc).__name__)
                await self._pause(IDLE_SECONDS)
                continue
            if rows:
                try:
                    await self._handle_batch(rows)
                except Exception:
                    # The database went away while marking: what is not marked is handled again
                    # (a student's turn remembers its update, so it queues nothing twice).
                    log.exception("handling stored Telegram updates failed; trying again")
                    await self._pause(IDLE_SECONDS, clear=True)
                continue
            if self.until_empty:
                return
            if self.check_info and time.monotonic() - self._info_checked >= INFO_CHECK_SECONDS:
                await self._check_info()
            await self._pause(IDLE_SECONDS)

    async def _handle_batch(self, rows: list[Waiting]) -> None:
        chains: dict[Hashable, list[tuple[Waiting, Update]]] = {}
        for row in rows:
            update = self._read(row)
            if update is None:
                await self._mark(row.row_id)
                continue
            chains.setdefault(order_key(update), []).append((row, update))
        await asyncio.gather(*(self._handle_chain(chain) for chain in chains.values()))
        newest = max(row.received_at for row in rows)
        with contextlib.suppress(sa.exc.DBAPIError):
            await self.ctx.in_database(update_store.record_received, self.ctx.engine, channel=CHANNEL, at=newest)

    def _read(self, row: Waiting) -> Update | None:
        try:
            if row.payload is None:
                raise ValueError("no payload")
            return Update.de_json(json.loads(self.ctx.box.decrypt(row.payload)), self.app.bot)
        except (UndecryptableError, ValueError, TypeError, KeyError) as exc:
            # Kept from being retried forever; never its content in the log.
            log.error("stored update %s cannot be read (%s; MLEG_SECRET_KEY changed?): set aside as handled",
                      row.update_id, type(exc).__name__)
            return None

    async def _handle_chain(self, chain: list[tuple[Waiting, Update]]) -> None:
        for row, update in chain:
            ref = StoredRef(row.row_id)
            token = update_store.handling.set(ref)
            try:
                async with self._slots:
                    # process_update hands a handler's error to the error handlers, never raises it.
                    await self.app.process_update(update)
            finally:
                update_store.handling.reset(token)
            if not ref.marked:
                await self._mark(row.row_id)
            self.handled += 1

    async def _mark(self, row_id: int) -> None:
        def mark() -> None:
            with unit_of_work(self.ctx.engine) as session:
                update_store.mark_handled(session, row_id, self.ctx.clock.now())

        await self.ctx.in_database(mark)

    async def _check_info(self) -> None:
        self._info_checked = time.monotonic()
        try:
            info = await self.app.bot.get_webhook_info()
        except TelegramError as exc:
            log.info("getWebhookInfo failed: %s", exc.message)
            return
        if info.last_error_message and info.last_error_date != self._error_seen:
            self._error_seen = info.last_error_date  # once per error, not once a minute
            log.warning("Telegram reports an error delivering to the webhook: %s", info.last_error_message)
        with contextlib.suppress(sa.exc.DBAPIError):
            await self.ctx.in_database(update_store.record_info, self.ctx.engine, channel=CHANNEL,
                                       pending_count=info.pending_update_count, error_at=info.last_error_date,
                                       error=info.last_error_message, now=self.ctx.clock.now())
