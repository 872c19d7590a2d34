"""The inbound pipeline's storage half: raw mail stored first, then processed, one commit each.

Storing and processing are separate commits on purpose (Zulip's mail gateway does the same):
a crash after storing loses nothing (the row waits as `new`), a crash while processing
rolls back that one message's decisions and its answer, and the next run does it again,
once. A message the rules cannot handle is quarantined: kept raw, visible to staff.

Two servers on one PostgreSQL both read the mailbox and both process what is `new`: each
mail is claimed in its processing transaction (SELECT ... FOR UPDATE SKIP LOCKED), so the
other server passes over it, and the mail's status changes only from `new` (a conditional
UPDATE, which is also what keeps a second SQLite process from recording it twice).

The raw mail is kept only that long: it may carry a PESEL or an activation code in clear,
so it is deleted in the commit that records the mail as processed or ignored (what staff
need is in the support thread, masked). Quarantined mail keeps it for staff to inspect.
On SQLite the deleted bytes also live on in the WAL file until it is reset, so each batch
that forgot a raw mail ends with one WAL checkpoint (core.storage.db.checkpoint_wal).
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.security.redact import redact_personal
from core.storage.blobs import insert_blob
from core.storage.db import checkpoint_wal
from core.storage.db_errors import is_transient
from core.storage.models import InboundMail, MailboxState
from core.support.faq import Faq
from core.support.mailbox_rules import Outcome, handle_inbound
from mail.guard import StoredMail, read_stored
from mail.parse import identity
from mail.stored import RAW, RAW_TABLE, stored_raw

__all__ = ["Fetched", "StoreResult", "mailbox_state", "process_pending", "store_fetched", "store_raw"]

log = logging.getLogger(__name__)

# Databases whose last checkpoint could not reset the WAL: the next batch tries again, even an empty one.
_wal_to_clear: weakref.WeakSet[Engine] = weakref.WeakSet()
# A temporary database error (lost connection, deadlock...) is not the mail's fault: tried
# again at once (after BACKOFF_SECONDS), then in the next batches; only one that repeats on
# the same mail this many times quarantines it.
ATTEMPTS_PER_BATCH = 3
BATCHES_BEFORE_QUARANTINE = 3
BACKOFF_SECONDS = (0.5, 2.0)
# Temporary database errors per stored mail, per database, over this process's batches.
_transient_failures: weakref.WeakKeyDictionary[Engine, Counter[int]] = weakref.WeakKeyDictionary()


@dataclass
class StoreResult:
    inbound_id: int | None  # None: a duplicate of a stored mail
    duplicate: bool


@dataclass
class ProcessedMail:
    inbound_id: int
    uid: int
    status: str
    outcome: Outcome | None = None


@dataclass
class BatchReport:
    stored: list[int] = field(default_factory=list)
    duplicates: int = 0
    processed: list[ProcessedMail] = field(default_factory=list)


def mailbox_state(ctx: AppContext, mailbox: str, uidvalidity: int) -> int:
    """The last UID stored for this mailbox; a new UIDVALIDITY starts again from 0.

    After a UIDVALIDITY change every message is fetched again; the digest keeps the ones
    already stored from being stored (and answered) twice.
    """
    with Session(ctx.engine) as session:
        state = session.get(MailboxState, mailbox)
        if state is None:
            state = MailboxState(mailbox=mailbox, uidvalidity=uidvalidity, last_uid=0)
        elif state.uidvalidity != uidvalidity:
            log.warning("mailbox %s: UIDVALIDITY changed %s -> %s; rescanning", mailbox, state.uidvalidity,
                        uidvalidity)
            state.uidvalidity = uidvalidity
            state.last_uid = 0
        session.add(state)
        session.commit()
        return state.last_uid


def store_raw(ctx: AppContext, *, mailbox: str, uidvalidity: int, uid: int, raw: bytes, size: int) -> StoreResult:
    """Store one fetched message and advance the mailbox's last UID, in one commit."""
    message_id, digest = identity(raw)
    now = ctx.clock.now()
    with Session(ctx.engine) as session:
        state = session.get(MailboxState, mailbox) or MailboxState(mailbox=mailbox, uidvalidity=uidvalidity)
        state.last_uid = max(state.last_uid, uid)
        session.add(state)
        duplicate = session.exec(select(InboundMail.id).where(InboundMail.digest == digest)).first()
        if duplicate is not None:
            session.commit()
            return StoreResult(None, True)
        row = InboundMail(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, message_id=message_id, digest=digest,
                          size=size, status="new", received_at=now)
        session.add(row)
        try:
            session.flush()
            inbound_id = row.id
            assert inbound_id is not None
            insert_blob(session, RAW, inbound_id, raw)
            session.commit()
        except IntegrityError:
            # Another reader stored the same mail between our check and our insert.
            session.rollback()
            return StoreResult(None, True)
        return StoreResult(inbound_id, False)


@dataclass
class Fetched:
    """One message as fetched: its UID, its raw bytes (only the head when over the limit), its size."""

    uid: int
    raw: bytes | bytearray
    size: int


_INSERT_INBOUND = sa.insert(InboundMail.__table__).returning(InboundMail.__table__.c.id)  # type: ignore[attr-defined]


def store_fetched(ctx: AppContext, *, mailbox: str, uidvalidity: int, fetched: list[Fetched]) -> list[StoreResult]:
    """Store the messages of one FETCH and advance the mailbox's last UID, in one commit.

    One commit per FETCH, not per message: the crash story is the same (a crash before the
    commit leaves the last UID where it was, so the whole FETCH is fetched and stored again,
    and nothing was processed from it yet), and the per-message transaction, mailbox-state
    read and commit were a third of the time the reader spent storing. When another reader
    stored one of them meanwhile (the digest's unique index), the FETCH is stored again one
    message per commit (`store_raw`), which tells that one apart.
    """
    if not fetched:
        return []
    identities = [identity(item.raw) for item in fetched]  # type: ignore[arg-type]  # a bytearray reads the same
    now = ctx.clock.now()
    with Session(ctx.engine) as session:
        state = session.get(MailboxState, mailbox) or MailboxState(mailbox=mailbox, uidvalidity=uidvalidity)
        state.last_uid = max(state.last_uid, *(item.uid for item in fetched))
        session.add(state)
        digests = {digest for _, digest in identities}
        seen = set(session.exec(select(InboundMail.digest).where(col(InboundMail.digest).in_(digests))).all())
        results: list[StoreResult] = []
        try:
            for item, (message_id, digest) in zip(fetched, identities, strict=True):
                if digest in seen:  # stored before, or earlier in this FETCH (the same mail twice)
                    results.append(StoreResult(None, True))
                    continue
                seen.add(digest)
                # A plain INSERT, not an ORM object and a flush per mail (a tenth of storing one).
                inbound_id = session.connection().execute(_INSERT_INBOUND, {
                    "mailbox": mailbox, "uidvalidity": uidvalidity, "uid": item.uid, "message_id": message_id,
                    "digest": digest, "size": item.size, "status": "new", "received_at": now}).scalar_one()
                insert_blob(session, RAW, inbound_id, item.raw)
                results.append(StoreResult(inbound_id, False))
            session.commit()
        except IntegrityError:
            session.rollback()
        else:
            return results
    # Another reader stored one of them between our check and our insert: one commit each.
    return [store_raw(ctx, mailbox=mailbox, uidvalidity=uidvalidity, uid=item.uid, raw=item.raw,  # type: ignore[arg-type]
                      size=item.size) for item in fetched]


# The statements each mail runs, built once: building one cost more than running it on SQLite.
_DELETE_RAW = sa.delete(RAW_TABLE).where(RAW_TABLE.c.inbound_id == sa.bindparam("inbound_id"))


def _forget_raw(session: Session, inbound_id: int) -> None:
    """Delete the raw mail; on SQLite its freed pages are overwritten (secure_delete, core.storage.db)."""
    session.execute(_DELETE_RAW, {"inbound_id": inbound_id})


def _clear_wal(engine: Engine) -> None:
    """Once per batch, not per mail: a checkpoint copies every page written since the last one."""
    if checkpoint_wal(engine):
        _wal_to_clear.discard(engine)
    else:
        _wal_to_clear.add(engine)
        log.warning("the SQLite WAL still holds forgotten raw mail (a reader was busy); retried next batch")


_INBOUND = InboundMail.__table__  # type: ignore[attr-defined]


@functools.cache
def _finish_statement(columns: tuple[str, ...]) -> sa.Update:
    return (sa.update(_INBOUND).where(_INBOUND.c.id == sa.bindparam("inbound_id"), _INBOUND.c.status == "new")
            .values({name: sa.bindparam(f"set_{name}") for name in columns}))


def _finish(session: Session, inbound_id: int, **values: object) -> bool:
    """Move a mail out of `new`; False when it is not `new` any more (another server did it)."""
    result = session.execute(_finish_statement(tuple(sorted(values))),
                             {"inbound_id": inbound_id, **{f"set_{k}": v for k, v in values.items()}})
    return result.rowcount == 1  # type: ignore[attr-defined]


def _quarantine(ctx: AppContext, inbound_id: int, error: str) -> bool:
    with Session(ctx.engine) as session:
        # An error message may quote the mail (a PESEL in a header it could not parse).
        done = _finish(session, inbound_id, status="quarantined", error=redact_personal(error[:2000]),
                       processed_at=ctx.clock.now())
        session.commit()
    return done


@dataclass(frozen=True)
class _Claimed:
    uid: int
    digest: str
    size: int


_CLAIM = (sa.select(_INBOUND.c.uid, _INBOUND.c.digest, _INBOUND.c.size)
          .where(_INBOUND.c.id == sa.bindparam("inbound_id"), _INBOUND.c.status == "new"))
_CLAIM_LOCKED = _CLAIM.with_for_update(skip_locked=True)


def _claim(session: Session, inbound_id: int) -> _Claimed | None:
    """The mail if it is still `new` and no other server is processing it; locked until the commit.

    PostgreSQL: the row lock is held by this processing transaction, and SKIP LOCKED passes
    over a mail another server holds instead of waiting to do it again. SQLite is one writer
    (one process by design): the status check suffices there, and the conditional UPDATE at
    the end (`_finish`) still refuses a mail another process recorded meanwhile. The columns
    the processing needs, not an ORM row: loading one was a tenth of the time per mail.
    """
    query = _CLAIM_LOCKED if session.get_bind().dialect.name == "postgresql" else _CLAIM
    row = session.execute(query, {"inbound_id": inbound_id}).first()
    return None if row is None else _Claimed(row.uid, row.digest, row.size)


def _stored_mail(ctx: AppContext, inbound_id: int, digest: str, size: int, max_bytes: int) -> StoredMail:
    return StoredMail(ctx.engine.url.render_as_string(hide_password=False), inbound_id, digest, size,
                      size > max_bytes)


def _process_one(ctx: AppContext, faq: Faq, inbound_id: int, max_bytes: int,
                 then: StoredMail | None = None) -> ProcessedMail | None:
    """Claim, handle and record one mail in one transaction; None when it is not (any more) ours to do.

    `then`: the mail to be processed next, read by the worker meanwhile (mail/guard.py).
    """
    with Session(ctx.engine, expire_on_commit=False) as session:
        row = _claim(session, inbound_id)
        if row is None:
            return None
        uid = row.uid
        # In a worker process with a time limit (mail/guard.py), which reads the raw mail from
        # the database itself: it never passes through this process (a 25 MB mail would be held
        # here twice). A hostile mail raises MailUnreadable, which is the mail's fault and
        # quarantines it at once with the reason.
        facts = read_stored(_stored_mail(ctx, inbound_id, row.digest, row.size, max_bytes),
                            timeout=ctx.settings.imap.parse_timeout_seconds, then=then,
                            load=lambda: stored_raw(session, inbound_id) or b"")
        outcome = handle_inbound(ctx, session, facts, inbound_id=inbound_id, faq=faq, digest=row.digest)
        # In the same commit: a crash before it leaves the mail `new` with its raw, to do again.
        if not _finish(session, inbound_id, status=outcome.status, error=outcome.reason[:2000],
                       thread_id=outcome.thread_id, processed_at=ctx.clock.now()):
            session.rollback()  # another process recorded it first: its decisions stand, not ours
            log.info("inbound mail %s: handled by another server meanwhile", inbound_id)
            return None
        _forget_raw(session, inbound_id)
        session.commit()
    log.info("inbound mail %s: %s (%s)", inbound_id, outcome.status, outcome.reason)
    return ProcessedMail(inbound_id, uid, outcome.status, outcome)


def _attempt(ctx: AppContext, faq: Faq, inbound_id: int, max_bytes: int,
             then: StoredMail | None = None) -> tuple[ProcessedMail | None, Exception | None]:
    """`_process_one`, tried again after a temporary database error: (its result, the error that ended it)."""
    failures = _transient_failures.setdefault(ctx.engine, Counter())
    last: Exception | None = None
    for attempt in range(ATTEMPTS_PER_BATCH):
        if attempt:
            time.sleep(BACKOFF_SECONDS[min(attempt - 1, len(BACKOFF_SECONDS) - 1)])
        try:
            result = _process_one(ctx, faq, inbound_id, max_bytes, then)
        except Exception as exc:  # the transaction was rolled back when its session closed
            if not is_transient(exc):
                failures.pop(inbound_id, None)
                return None, exc
            failures[inbound_id] += 1
            last = exc
            # Only the type: the message may quote the mail's values.
            log.warning("inbound mail %s: temporary database error (%s), try %d of %d", inbound_id,
                        type(exc.orig if isinstance(exc, DBAPIError) else exc).__name__, attempt + 1,
                        ATTEMPTS_PER_BATCH)
            continue
        failures.pop(inbound_id, None)
        return result, None
    return None, last


def process_pending(ctx: AppContext, faq: Faq, *, limit: int = 200) -> list[ProcessedMail]:
    """Process every stored `new` mail, oldest first, each in its own unit of work.

    A mail the rules cannot handle is quarantined at once. A temporary database error (see
    core.storage.db_errors) is not the mail's fault: the mail is tried again, and when the error
    outlasts this batch's tries it stays `new` and the batch ends there (the database is in
    trouble; the next batch starts with it). Only a failure that keeps repeating on the same
    mail, over BATCHES_BEFORE_QUARANTINE batches, quarantines it.
    """
    with Session(ctx.engine) as session:
        pending = list(session.exec(
            select(InboundMail.id, InboundMail.uid, InboundMail.digest, InboundMail.size)
            .where(InboundMail.status == "new")
            .order_by(col(InboundMail.id)).limit(limit)
        ).all())
    done: list[ProcessedMail] = []
    max_bytes = ctx.settings.imap.max_message_bytes
    failures = _transient_failures.setdefault(ctx.engine, Counter())
    for position, (inbound_id, uid, _digest, _size) in enumerate(pending):
        assert inbound_id is not None
        following = pending[position + 1] if position + 1 < len(pending) else None
        # Handed to the reader now, read while this one is answered (mail/guard.py).
        then = None if following is None else _stored_mail(ctx, following[0] or 0, following[2], following[3],
                                                           max_bytes)
        result, error = _attempt(ctx, faq, inbound_id, max_bytes, then)
        if error is None:
            if result is not None:
                done.append(result)
            continue
        transient = is_transient(error)
        if transient and failures[inbound_id] < ATTEMPTS_PER_BATCH * BATCHES_BEFORE_QUARANTINE:
            log.warning("inbound mail %s left `new` for the next batch: the database keeps failing", inbound_id)
            break
        prefix = f"after {failures.pop(inbound_id, 0)} tries, each a temporary database error: " if transient else ""
        try:
            # Only the type and the row: the message may carry a PESEL or a code.
            quarantined = _quarantine(ctx, inbound_id, f"{prefix}{type(error).__name__}: {error}")
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("inbound mail %s left `new`: the database failed again (%s)", inbound_id, type(exc).__name__)
            break
        if quarantined:
            log.error("inbound mail %s quarantined", inbound_id, exc_info=error)
            done.append(ProcessedMail(inbound_id, uid, "quarantined"))
        else:
            log.info("inbound mail %s: handled by another server meanwhile (%s here)", inbound_id,
                     type(error).__name__)
    if any(d.status != "quarantined" for d in done) or ctx.engine in _wal_to_clear:
        _clear_wal(ctx.engine)
    if done:
        ctx.outbox_changed("email")
        ctx.outbox_changed("staff")
    return done
