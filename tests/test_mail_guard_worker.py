"""Issue 17 (P2, P5): the parse worker reads the stored mail itself, and reads the next one meanwhile.

The raw mail must never pass through the serving process while it is processed (a 25 MB mail
was pickled to the worker: a second copy here, and a cost for every mail), and the worker
must never hand one mail's facts to another (row ids can be reused). The hostile-mail limits
themselves are tested in tests/test_mail_hostile.py and tests/test_serve_hostile_mail_e2e.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.storage.models import InboundMail
from mail import guard, inbound
from mail.inbound import process_pending, store_raw
from tests.mail_samples.kit import mail_ctx

PLAIN = ("From: ola{n}@example.org\r\nTo: pomoc@example.edu.pl\r\nSubject: Kod {n}\r\nMessage-ID: <g{n}@example.org>"
         "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nNie dostałem maila z kodem. Numer {n}.\r\n")


@pytest.fixture
def ctx(tmp_path: Path, sqlite_url: str, clock: FixedClock) -> Iterator[AppContext]:
    context = mail_ctx(tmp_path, sqlite_url, clock, imap={"parse_timeout_seconds": 30})
    yield context
    context.engine.dispose()


def _store(ctx: AppContext, n: int) -> int:
    raw = PLAIN.format(n=n).encode()
    stored = store_raw(ctx, mailbox="INBOX", uidvalidity=1, uid=n, raw=raw, size=len(raw))
    assert stored.inbound_id is not None
    return stored.inbound_id


def _mail(ctx: AppContext, inbound_id: int) -> guard.StoredMail:
    with Session(ctx.engine) as session:
        row = session.exec(select(InboundMail).where(InboundMail.id == inbound_id)).one()
    return inbound._stored_mail(ctx, inbound_id, row.digest, row.size, ctx.settings.imap.max_message_bytes)


def test_the_serving_process_never_reads_the_raw_mail_while_processing(ctx: AppContext,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [_store(ctx, n) for n in range(1, 4)]

    def not_here(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("the raw mail was read in the serving process")

    monkeypatch.setattr(inbound, "stored_raw", not_here)  # this process only: the worker has its own
    done = process_pending(ctx, ctx.faq)
    assert [(d.inbound_id, d.status) for d in done] == [(i, "processed") for i in ids]
    assert [d.outcome.thread_id is not None for d in done if d.outcome] == [True] * 3


def test_the_next_mail_is_handed_to_the_worker_before_this_one_is_answered(ctx: AppContext) -> None:
    first, second = _store(ctx, 1), _store(ctx, 2)
    facts = guard.read_stored(_mail(ctx, first), timeout=30, then=_mail(ctx, second))
    assert facts.subject == "Kod 1"
    worker = guard._worker
    assert worker is not None and worker.in_flight == guard._key(_mail(ctx, second))  # being read now
    assert guard.read_stored(_mail(ctx, second), timeout=30).subject == "Kod 2"
    assert worker.in_flight is None


def test_a_mail_whose_row_changed_is_never_read_as_another(ctx: AppContext) -> None:
    inbound_id = _store(ctx, 1)
    real = _mail(ctx, inbound_id)
    other = guard.StoredMail(real.database_url, real.inbound_id, "0" * 64, real.size, real.oversize)
    with pytest.raises(LookupError, match="not the one asked for"):
        guard.read_stored(other, timeout=30)
    assert guard.read_stored(real, timeout=30).subject == "Kod 1"  # the right one still reads


def test_raw_bytes_handed_over_are_still_read_in_the_worker() -> None:
    raw = PLAIN.format(n=7).encode()
    facts = guard.read_inbound(raw, size=len(raw), oversize=False, timeout=30)  # bench/hostile_mail.py's way
    assert (facts.sender, facts.subject) == ("ola7@example.org", "Kod 7")
