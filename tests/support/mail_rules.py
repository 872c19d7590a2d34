"""One support mail through the mailbox rules, the way mail/inbound.py hands it over."""

from __future__ import annotations

import itertools

from sqlmodel import Session

from core.app.context import AppContext
from core.storage.models import InboundMail
from core.support.faq import Faq
from core.support.mailbox_rules import InboundFacts, Outcome, handle_inbound

_n = itertools.count(1)


def handle(ctx: AppContext, facts: InboundFacts) -> Outcome:
    """One mail through the rules, as mail/inbound.py does it (the row first, one commit)."""
    with Session(ctx.engine) as session:
        n = next(_n)
        stored = InboundMail(mailbox="INBOX", uidvalidity=1, uid=n, message_id=facts.message_id,
                             digest=f"{n:064d}", size=100, received_at=ctx.clock.now())
        session.add(stored)
        session.flush()
        outcome = handle_inbound(ctx, session, facts, inbound_id=stored.id or 0,
                                 faq=Faq.load(ctx.settings.config_dir / "faq"))
        session.commit()
    return outcome
