"""A flood of mail must not bury the staff room, nor reflect automatic answers onto a victim.

Escalations are capped per sender (address without `+tag`, any case) and per domain in 24
hours; the excess stays as held threads in `mleg threads list`. The per-sender cap of
automatic answers counts `victim+N@` variants as one address.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from core.app.context import AppContext
from core.messaging import outbox
from core.messaging.outgoing import OutgoingMessage
from core.storage.models import OutboxMessage, SupportThread
from core.support.mailbox_rules import (
    AUTO_ANSWER_KINDS,
    InboundFacts,
    Outcome,
    _auto_answers_statement,
    _auto_answers_today,
)
from core.support.threads import same_sender
from tests.cli_helpers import invoke
from tests.support.mail_rules import handle

OURS = "mx.example.edu.pl"
QUESTION = "Czy mogę przyjść osobiście w sobotę?"  # no FAQ answer: escalated to staff


def _configure(ctx: AppContext) -> AppContext:
    settings = ctx.settings
    settings.telegram.token = SecretStr("123:staff-room-configured")
    settings.telegram.staff_chat_id = -100500
    settings.imap.authserv_id = OURS
    settings.imap.escalations_per_sender_per_day = 2
    settings.imap.escalations_per_domain_per_day = 3
    return ctx


@pytest.fixture
def desk(ctx: AppContext) -> AppContext:
    """SQLite and PostgreSQL: the caps are counted in SQL (lower case, LIKE on `+tag`s)."""
    return _configure(ctx)


@pytest.fixture
def sqlite_desk(sqlite_ctx: AppContext) -> AppContext:
    """The one `mleg threads` (the `runner` fixture) reads."""
    return _configure(sqlite_ctx)


def _mail(ctx: AppContext, sender: str, n: int, *, proven: bool = False, text: str = QUESTION) -> Outcome:
    domain = sender.rpartition("@")[2]
    results = [f"{OURS}; dkim=pass header.d={domain}; dmarc=pass header.from={domain}"] if proven else []
    return handle(ctx, InboundFacts(sender=sender.lower(), subject=f"Pytanie {n}", text=text,
                                    message_id=f"<flood-{n}-{sender}>", authentication_results=results))


def _escalations(ctx: AppContext) -> list[int | None]:
    with Session(ctx.engine) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.channel == "staff",
                                                        OutboxMessage.kind == "escalation")).all()
        return [row.thread_id for row in rows]


def _held(ctx: AppContext) -> list[int | None]:
    with Session(ctx.engine) as session:
        return [t.id for t in session.exec(select(SupportThread).where(
            SupportThread.escalation_held.is_not(None))).all()]  # type: ignore[union-attr]


def test_escalations_per_sender_count_plus_tags_and_case_as_one(sqlite_desk: AppContext,
                                                                 runner: CliRunner) -> None:
    desk = sqlite_desk
    outcomes = [_mail(desk, sender, n) for n, sender in enumerate(
        ["victim@example.org", "Victim+1@example.org", "victim+2@EXAMPLE.org", "victim+3@example.org"])]
    posted = _escalations(desk)
    assert posted == [outcomes[0].thread_id, outcomes[1].thread_id]
    # The excess is kept, listed, and not posted; staff are told once that something is held.
    assert _held(desk) == [outcomes[2].thread_id, outcomes[3].thread_id]
    with Session(desk.engine) as session:
        notes = session.exec(select(OutboxMessage).where(OutboxMessage.channel == "staff",
                                                         OutboxMessage.kind == "staff-note")).all()
    assert len(notes) == 1 and notes[0].thread_id is None
    listed = json.loads(invoke(runner, "threads", "list", "--json"))
    held = {t["id"]: t["escalation_held"] for t in listed["threads"]}
    assert held[outcomes[3].thread_id].startswith("sender cap")
    assert held[outcomes[0].thread_id] is None
    table = invoke(runner, "threads", "list")
    assert "escalated (held)" in table and f"#{outcomes[3].thread_id}" in table
    assert "held            2 escalation(s)" in invoke(runner, "status")

    # Another sender is not held back by this one; the next day the victim is posted again.
    other = _mail(desk, "someone@example.net", 10)
    assert _escalations(desk)[-1] == other.thread_id
    desk.clock.advance(timedelta(days=1, minutes=1))  # type: ignore[attr-defined]
    again = _mail(desk, "victim+9@example.org", 11)
    assert _escalations(desk)[-1] == again.thread_id


def test_escalations_per_domain_and_a_proven_student_still_gets_through(desk: AppContext) -> None:
    spam = [_mail(desk, f"bot{n}@spam.example", n) for n in range(5)]
    assert _escalations(desk) == [o.thread_id for o in spam[:3]]
    assert _held(desk) == [o.thread_id for o in spam[3:]]

    # A flood forged in the university's domain: capped too...
    forged = [_mail(desk, f"s{n}@student.example.edu.pl", 20 + n) for n in range(4)]
    assert forged[3].thread_id in _held(desk)
    # ...but a student proven by our server is posted: the flood must not silence students.
    real = _mail(desk, "anna.nowak@student.example.edu.pl", 30, proven=True)
    assert _escalations(desk)[-1] == real.thread_id


def _auto_answers(ctx: AppContext) -> list[str]:
    with Session(ctx.engine) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.channel == "email")).all()
        return [row.recipient for row in rows]


def test_auto_answer_cap_counts_plus_tag_variants_as_one_address(desk: AppContext) -> None:
    desk.settings.imap.escalations_per_sender_per_day = 0  # only the answer cap in play here
    limit = desk.settings.imap.auto_replies_per_sender_per_day
    for n in range(limit + 3):
        _mail(desk, f"Victim+{n}@example.org", 40 + n, text="Nie dostałem maila z kodem aktywacyjnym.")
    answered = _auto_answers(desk)
    assert len(answered) == limit, answered


_ADDRESSES = ["jan@x.pl", "JAN+1@x.pl", "jan+@x.pl", "Jan+a+b@X.PL", "jan.k@x.pl", "jano+1@x.pl", "jan+1@y.pl",
              "jan,1@x.pl", "ja_n+1@x.pl", "jaxn+1@x.pl", "ja%n+2@x.pl", "łukasz+1@x.pl", "Łukasz@x.pl", "x@jan.pl"]


def test_auto_answer_cap_counts_what_the_address_pattern_matches(desk: AppContext) -> None:
    """The cap's count (narrowed to an index range) is exactly the `same_sender` pattern's count."""
    now = desk.clock.now()
    with Session(desk.engine) as session:
        for n, address in enumerate(_ADDRESSES):
            for kind in ("mail-answer", "mail-notice", "activation"):  # activation mail is not counted
                outbox.enqueue_once(session, desk.box, key=f"cap-{n}-{kind}", channel="email", recipient=address,
                                    kind=kind, message=OutgoingMessage(text="x"), now=now)
        outbox.enqueue_once(session, desk.box, key="cap-old", channel="email", recipient="jan@x.pl",
                            kind="mail-answer", message=OutgoingMessage(text="x"), now=now - timedelta(days=2))
        session.commit()
        for sender in ["jan@x.pl", "Jan+7@x.pl", "ja_n@x.pl", "ja%n@x.pl", "łukasz@x.pl", "jan,1@x.pl", "nobody@x.pl"]:
            expected = session.exec(select(sa.func.count()).select_from(OutboxMessage).where(
                OutboxMessage.channel == "email", col(OutboxMessage.kind).in_(AUTO_ANSWER_KINDS),
                same_sender(col(OutboxMessage.recipient), sender),
                col(OutboxMessage.created_at) >= now - timedelta(days=1))).one()
            assert _auto_answers_today(session, sender, desk) == expected, sender
        assert _auto_answers_today(session, "jan@x.pl", desk) == 2 * 4  # jan, JAN+1, jan+, Jan+a+b


def test_auto_answer_cap_reads_the_senders_rows_not_the_day(sqlite_desk: AppContext) -> None:
    """Each mail counts its sender's answers: through ix_outbox_recipient_key, not a day of the outbox."""
    with Session(sqlite_desk.engine) as session:
        connection = session.connection()
        statement = _auto_answers_statement(connection.dialect.name).params(
            since=sqlite_desk.clock.now(), key="jan@x.pl", low="jan+", high="jan,", pattern="jan+%@x.pl")
        sql = statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
        plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
    searches = [row[3] for row in plan if "outbox" in row[3]]
    assert len(searches) == 2 and all("USING INDEX ix_outbox_recipient_key" in s for s in searches), searches
