"""Inbound mail read in a worker process with a time limit: one hostile mail cannot stall `mleg serve`.

Parsing a mail and reading its text is pure Python, and pure Python holds the interpreter
lock: a mail that made any step slow (the stdlib's MIME and header parsers are not ours to
make linear) would freeze the bot, the outbox senders and the jobs with it, and a thread
cannot be stopped. So the serving process hands the raw bytes to one worker process
(pebble's ProcessPool, started with `spawn`: never a fork of a process that runs threads)
and waits for the facts with the GIL released. Past `imap.parse_timeout_seconds` of the
worker's own time (its start-up is not counted) the worker is killed and replaced, and the
caller gets `MailUnreadable` with the reason; a worker that dies (out of memory, a crash)
gives the same. A worker that cannot even start is not the mail's fault: the mail is then
read in the serving process (logged as an error), as it was before the worker existed.
mail/inbound.py quarantines a mail that gave MailUnreadable, with the reason, once: it is
not retried, so a restart does not meet it again.

One worker, one mail at a time (a lock): every caller in the process waits its turn (a
second processing pass never reads beside the first; mail/frontend.py runs only one anyway).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

from pebble import ProcessExpired, ProcessPool

from core.support.mail_text import question_text
from core.support.mailbox_rules import InboundFacts
from mail.parse import parse_inbound

__all__ = ["MailUnreadable", "read_inbound", "stop_worker"]

log = logging.getLogger(__name__)

# The worker is replaced after this many mails, so a big mail's memory does not stay with it.
MAX_MAILS_PER_WORKER = 500
# On top of the limit: how long a worker may take to start (imports on a loaded machine).
START_ALLOWANCE_SECONDS = 120.0

_lock = threading.Lock()
_pool: ProcessPool | None = None


class MailUnreadable(Exception):
    """The mail could not be read within the limits (too slow, or the worker died): quarantine it."""


def _read(raw: bytes, size: int | None, oversize: bool) -> InboundFacts:
    facts = parse_inbound(raw, size=size, oversize=oversize)
    # The rules cut the question out of the text next (core.support.mail_text): done here once as well,
    # so anything slow there also trips the limit here, not in the serving process. (The
    # understanding then reads at most that bounded question, in linear time.)
    question_text(facts.subject, facts.text)
    return facts


def _started() -> ProcessPool:
    global _pool
    if _pool is None or not _pool.active:
        _pool = ProcessPool(max_workers=1, max_tasks=MAX_MAILS_PER_WORKER,
                            context=multiprocessing.get_context("spawn"))
    return _pool


def stop_worker() -> None:
    """Stop the worker process (at exit; tests). The next mail starts a new one."""
    global _pool
    # Not under the lock: a mail being read would hold it; stopping ends that wait too.
    pool, _pool = _pool, None
    if pool is not None:
        pool.stop()
        pool.join(timeout=10)


atexit.register(stop_worker)  # a live worker would keep the interpreter from exiting


def read_inbound(raw: bytes, *, size: int | None, oversize: bool, timeout: float) -> InboundFacts:
    """`parse_inbound` in the worker, limited to `timeout` seconds; MailUnreadable when it fails so."""
    with _lock:
        try:
            future = _started().schedule(_read, args=(raw, size, oversize), timeout=timeout)
            return future.result(timeout=timeout + START_ALLOWANCE_SECONDS)
        except FutureTimeout:
            future.cancel()  # the pool kills the worker running it, and starts another
            raise MailUnreadable(f"reading the mail took longer than {timeout:g} s (hostile or broken "
                                 "MIME/HTML?); it was stopped") from None
        except ProcessExpired as exc:
            raise MailUnreadable(f"the process reading the mail died (exit code {exc.exitcode}); "
                                 "too big or broken for the parser?") from None
        except BrokenProcessPool:
            # No worker could be started (not the mail's fault: it must not be quarantined for
            # it). Read it here, as before the worker existed: every step is linear anyway
            # (mail/parse.py, core/support/mail_text.py); only the time limit is lost.
            stop_worker()
            log.error("no worker process could be started to read mail; reading it in this process")
            return _read(raw, size, oversize)
