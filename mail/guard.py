"""Inbound mail read in a worker process with a time limit: one hostile mail cannot stall `mleg serve`.

Parsing a mail and reading its text is pure Python, and pure Python holds the interpreter
lock: a mail that made any step slow (the stdlib's MIME and header parsers are not ours to
make linear) would freeze the bot, the outbox senders and the jobs with it, and a thread
cannot be stopped. So every mail is read in one worker process (forked from a fork server,
a fresh interpreter that runs no threads: never a fork of the serving process, which runs
threads) while the caller waits for the facts with the GIL released. Past
`imap.parse_timeout_seconds` of the worker's own time on that mail (its start-up is not
counted) the worker is killed and replaced, and the caller gets
`MailUnreadable` with the reason; a worker that dies (out of memory, a crash) gives the
same. mail/inbound.py quarantines a mail that gave MailUnreadable, with the reason, once:
it is not retried, so a restart does not meet it again.

Why a worker of our own and not a pool (issue 17, P2 and P5; pebble's ProcessPool before):
- the raw mail never crosses the pipe: the worker is given the stored mail's row id and
  reads the raw bytes from the database itself (its own engine on the same URL; the raw row
  is committed before processing starts). Pickling a 25 MB mail to the worker kept a second
  copy in the serving process (2.2x the mail's size in heap instead of 1.15x), and every
  mail paid for the copy;
- one pipe, read by the caller's own thread: a pool moves each task through two manager
  threads of its own, and each hand-over of the interpreter lock between busy threads waits
  up to the switch interval (5 ms): that, not the parse, was most of the 5.7 ms per mail;
- the next mail is handed over before the caller works on this one's facts (`then=`), so
  the worker parses mail n+1 while the serving process answers mail n (a second core does
  the parse; the serving process only unpickles the facts).
Small mails are not parsed in the serving process: every text step of ours is linear
(mail/parse.py, core/support/mail_text.py), but the stdlib's MIME and header parsers are not proven
so, and the guarantee is that no mail, of any size, can hold the interpreter.

The time limit per mail is measured from the worker's own clock reading when it starts that
mail (time.monotonic, one clock for every process on Linux), so a mail parsed ahead while
the caller was busy is not charged for the caller's time, and one the worker is still on is
stopped `timeout` seconds after it began. One worker, one caller at a time (a lock): a
second processing pass never reads beside the first (mail/frontend.py runs only one anyway).

A worker that cannot even start is not the mail's fault: the mail is then read in the
serving process (logged as an error), as it was before the worker existed; a worker that
cannot read the database passes the error back to the caller (a temporary one is retried
there, core.storage.db_errors).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import multiprocessing
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, cast

from core.support.mail_text import question_text
from core.support.mailbox_rules import InboundFacts
from mail.parse import parse_inbound

__all__ = ["MailUnreadable", "StoredMail", "read_inbound", "read_stored", "stop_worker"]

log = logging.getLogger(__name__)

# The worker is replaced after this many mails, so a big mail's memory does not stay with it.
MAX_MAILS_PER_WORKER = 500
# On top of the limit: how long a worker may take to start (imports on a loaded machine).
START_ALLOWANCE_SECONDS = 120.0
# Results kept for a mail asked again (a retry after a temporary database error): facts are small.
_KEPT_RESULTS = 8

Reader = Callable[[bytes, "int | None", bool], InboundFacts]


class MailUnreadable(Exception):
    """The mail could not be read within the limits (too slow, or the worker died): quarantine it."""


@dataclass(frozen=True)
class StoredMail:
    """A stored mail the worker reads itself: the database URL, the row's id and the mail's digest.

    The digest is checked by the worker and is part of the key results are kept under: a row id
    alone may be reused (SQLite reuses the highest ids after retention deleted them), and facts
    of one mail must never be taken for another's.
    """

    database_url: str
    inbound_id: int
    digest: str
    size: int | None
    oversize: bool


def _read(raw: bytes, size: int | None, oversize: bool) -> InboundFacts:
    facts = parse_inbound(raw, size=size, oversize=oversize)
    # The rules cut the question out of the text next (core.support.mail_text): done here once as well,
    # so anything slow there also trips the limit here, not in the serving process. (The
    # understanding then reads at most that bounded question, in linear time.)
    question_text(facts.subject, facts.text)
    return facts


# --- the worker process ---------------------------------------------------------------------------

_DIGEST: Any = None  # the worker's statement for a stored mail's digest, built once


def _load_stored(engines: dict[str, Any], mail: StoredMail) -> bytes:
    global _DIGEST
    import sqlalchemy as sa

    from core.storage.blobs import read_blob
    from core.storage.db import make_engine
    from core.storage.models import InboundMail
    from mail.stored import RAW

    engine = engines.get(mail.database_url)
    if engine is None:
        for old in engines.values():  # one database in service; tests move from one to the next
            old.dispose()
        engines.clear()
        engine = engines[mail.database_url] = make_engine(mail.database_url)
    if _DIGEST is None:
        table = InboundMail.__table__  # type: ignore[attr-defined]
        _DIGEST = sa.select(table.c.digest).where(table.c.id == sa.bindparam("inbound_id"))
    # A connection, not an ORM session (nothing here is an object), closed at once: an open
    # SQLite read would keep the batch's WAL checkpoint from resetting the WAL.
    with engine.connect() as connection:
        digest = connection.execute(_DIGEST, {"inbound_id": mail.inbound_id}).scalar()
        if digest != mail.digest:
            raise LookupError(f"stored mail {mail.inbound_id} is not the one asked for (deleted or replaced)")
        return read_blob(connection, RAW, mail.inbound_id) or b""


def _serve(connection: Connection) -> None:
    """The worker: ("mail", key, reader, what) in; ("started", key, t), then ("ok"|"error", key, value) out."""
    engines: dict[str, Any] = {}
    connection.send(("ready",))
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):  # the serving process is gone (stopped, or killed)
            return
        if message is None:
            return
        _, key, reader, what = message
        connection.send(("started", key, time.monotonic()))
        try:
            if isinstance(what, StoredMail):
                raw = _load_stored(engines, what)
                size, oversize = what.size, what.oversize
            else:
                raw, size, oversize = what
            facts = reader(raw, size, oversize)
            del raw
        except Exception as exc:  # the caller decides: a database error is retried, the rest quarantines
            try:
                connection.send(("error", key, exc))
            except Exception:  # not picklable: its type and text
                connection.send(("error", key, RuntimeError(f"{type(exc).__name__}: {exc}")))
            continue
        connection.send(("ok", key, facts))


# --- the serving process's side -------------------------------------------------------------------

def _context() -> multiprocessing.context.BaseContext:
    """Workers forked from a fork server that has imported this module (and the main module) once.

    Spawning each worker afresh made it import SQLAlchemy, the models and everything the
    program's main module imports: about a second of CPU per worker, once per
    MAX_MAILS_PER_WORKER mails, while the serving process waited for it (half the reader's
    CPU per mail, measured by bench.mail_throughput). The fork server is itself a fresh
    interpreter that runs no threads, so a worker is still never a fork of a process that
    runs threads; it lives as long as the serving process.
    """
    context = multiprocessing.get_context("forkserver")
    main = sys.modules.get("__main__")
    # `python -m x`: the main module by name (a child would otherwise import it again itself),
    # except a package's __main__ (`python -m core.cli`), which runs the program when imported
    # and which multiprocessing's children never import either.
    main_name = getattr(getattr(main, "__spec__", None), "name", None)
    preload = ["__main__", __name__]
    if main_name and main_name != "__main__" and not main_name.endswith(".__main__"):
        preload.append(main_name)
    context.set_forkserver_preload(preload)
    return context


class _Worker:
    """One worker process and the parent's end of its pipe; at most one mail in flight."""

    def __init__(self) -> None:
        context = _context()
        self.connection, child = context.Pipe()
        self.process: BaseProcess = context.Process(target=_serve, args=(child,), name="mleg-mail-reader",
                                                    daemon=True)
        self.process.start()
        child.close()
        self.served = 0
        # The mail sent and not yet answered: (key, the worker's start time once it said so).
        self.in_flight: str | None = None
        self.started_at: float | None = None
        try:
            if not self.connection.poll(START_ALLOWANCE_SECONDS):
                raise BrokenProcessPool(f"the mail reader did not start in {START_ALLOWANCE_SECONDS:g} s")
            self.connection.recv()  # ("ready",)
        except (EOFError, OSError) as exc:
            self.kill()
            raise BrokenProcessPool(f"the mail reader died while starting (exit code {self.process.exitcode})") \
                from exc
        except BaseException:
            self.kill()
            raise

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def send(self, key: str, reader: Reader, what: StoredMail | tuple[bytes, int | None, bool]) -> None:
        try:
            self.connection.send(("mail", key, reader, what))
        except OSError as exc:  # it died idle (killed from outside): not this mail's doing
            self.kill()
            raise BrokenProcessPool(f"the mail reader was gone (exit code {self.process.exitcode})") from exc
        self.in_flight, self.started_at = key, None

    def receive(self, timeout: float) -> tuple[str, Any]:
        """The in-flight mail's ("ok"|"error", value); MailUnreadable past `timeout` of its worker time."""
        key = self.in_flight
        assert key is not None
        try:
            while True:
                if self.started_at is None:
                    # Not started yet: the worker answers at once unless it is dying; allow its start.
                    wait: float = START_ALLOWANCE_SECONDS
                else:
                    wait = max(0.0, self.started_at + timeout - time.monotonic())
                if not self.connection.poll(wait):
                    self.kill()  # the only way to stop pure Python that holds the GIL over there
                    if self.started_at is None:  # the worker is wedged before the mail: not the mail's fault
                        raise BrokenProcessPool(f"the mail reader did not take a mail in "
                                                f"{START_ALLOWANCE_SECONDS:g} s")
                    raise MailUnreadable(f"reading the mail took longer than {timeout:g} s (hostile or broken "
                                         "MIME/HTML?); it was stopped")
                kind, got, value = self.connection.recv()
                if got != key:
                    continue  # cannot happen (one in flight); never take another mail's facts
                if kind == "started":
                    self.started_at = value
                    continue
                self.in_flight = None
                self.served += 1
                return kind, value
        except (EOFError, OSError):
            self.process.join(timeout=10)
            code = self.process.exitcode
            self.kill()
            raise MailUnreadable(f"the process reading the mail died (exit code {code}); "
                                 "too big or broken for the parser?") from None

    def kill(self) -> None:
        self.in_flight = None
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.connection.close()

    def stop(self) -> None:
        if self.process.is_alive() and self.in_flight is None:
            try:
                self.connection.send(None)
                self.process.join(timeout=5)
            except OSError:
                pass
        self.kill()


_lock = threading.Lock()
_worker: _Worker | None = None
# Recent results by mail key: ("ok", facts) or ("error", exception) (MailUnreadable included).
_results: OrderedDict[str, tuple[str, Any]] = OrderedDict()
_raw_numbers = itertools.count()


def _started() -> _Worker:
    """The live worker (started when there is none); BrokenProcessPool when none can be started."""
    global _worker
    if _worker is not None and (not _worker.alive or
                                (_worker.in_flight is None and _worker.served >= MAX_MAILS_PER_WORKER)):
        _worker.stop()
        _worker = None
    if _worker is None:
        try:
            _worker = _Worker()
        except BrokenProcessPool:
            raise
        except Exception as exc:
            raise BrokenProcessPool(f"the mail reader could not be started: {type(exc).__name__}: {exc}") from exc
    return _worker


def stop_worker() -> None:
    """Stop the worker process (at exit; tests). The next mail starts a new one."""
    global _worker
    # Not under the lock: a mail being read would hold it; stopping ends that wait too.
    worker, _worker = _worker, None
    _results.clear()
    if worker is not None:
        worker.stop()


atexit.register(stop_worker)  # a live worker would keep the interpreter from exiting


def _key(what: StoredMail | tuple[bytes, int | None, bool]) -> str:
    if isinstance(what, StoredMail):
        return f"{what.database_url}#{what.inbound_id}#{what.digest}"
    return f"raw#{next(_raw_numbers)}"  # bytes handed over are read once, never kept


def _keep(key: str, result: tuple[str, Any]) -> None:
    _results[key] = result
    while len(_results) > _KEPT_RESULTS:
        _results.popitem(last=False)


def _finish_in_flight(worker: _Worker, timeout: float) -> None:
    """Take the answer for the mail already handed over (kept for when it is asked)."""
    key = worker.in_flight
    assert key is not None
    try:
        _keep(key, worker.receive(timeout))
    except MailUnreadable as exc:
        _keep(key, ("error", exc))


def _read_here(what: StoredMail | tuple[bytes, int | None, bool], load: Callable[[], bytes] | None) -> InboundFacts:
    # No worker could be started (not the mail's fault: it must not be quarantined for it).
    # Read it here, as before the worker existed: every step is linear anyway (mail/parse.py,
    # core/support/mail_text.py); only the time limit is lost.
    stop_worker()
    log.error("no worker process could be started to read mail; reading it in this process")
    if isinstance(what, StoredMail):
        raw = load() if load is not None else b""
        return _read(raw, what.size, what.oversize)
    return _read(*what)


def _read_guarded(what: StoredMail | tuple[bytes, int | None, bool], *, timeout: float,
                  then: StoredMail | None = None, load: Callable[[], bytes] | None = None) -> InboundFacts:
    key = _key(what)
    with _lock:
        result: tuple[str, Any] | None = _results.pop(key, None)
        try:
            if result is None:
                worker = _started()
                if worker.in_flight is not None and worker.in_flight != key:
                    _finish_in_flight(worker, timeout)  # asked out of order: a retry, or another caller
                    worker = _started()
                if worker.in_flight != key:
                    worker.send(key, _read, what)
                try:
                    result = worker.receive(timeout)
                except MailUnreadable as unreadable:
                    result = ("error", unreadable)
            if then is not None and result[0] == "ok" and _key(then) not in _results:
                # The next mail is parsed over there while the caller answers this one.
                worker = _started()
                if worker.in_flight is None:
                    worker.send(_key(then), _read, then)
        except BrokenProcessPool:
            if result is None:
                return _read_here(what, load)
        kind, value = result
        if kind == "ok":
            return cast(InboundFacts, value)
        raise value


def read_stored(mail: StoredMail, *, timeout: float, then: StoredMail | None = None,
                load: Callable[[], bytes] | None = None) -> InboundFacts:
    """`parse_inbound` of a stored mail in the worker, which reads it from the database itself.

    `then`: the mail the caller will ask for next, handed over now so it is read meanwhile.
    `load`: the raw mail read by the caller, used only when no worker can be started.
    MailUnreadable when the mail is too slow to read or kills the worker; an error reading
    the database is raised as it is (a temporary one is the caller's to retry).
    """
    return _read_guarded(mail, timeout=timeout, then=then, load=load)


def read_inbound(raw: bytes, *, size: int | None, oversize: bool, timeout: float) -> InboundFacts:
    """`parse_inbound` of `raw` in the worker (the bytes are sent to it), limited to `timeout` seconds."""
    return _read_guarded((raw, size, oversize), timeout=timeout)
