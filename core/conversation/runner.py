"""Drives the engine for one event: loads the state, answers its storage requests, saves, commits.

One event is one unit of work: the new state, the guesses counted, the credential
created and the replies queued in the outbox commit together or not at all.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid

import sqlalchemy as sa
from sqlmodel import Session, select

from core.app.context import AppContext
from core.conversation.engine import EngineConfig, step
from core.conversation.events import Event, Reply, coalesce_replies
from core.conversation.executor import Executor
from core.conversation.state import ConversationState
from core.conversation.terms import Terms, TermsSource, load_terms
from core.messaging import outbox
from core.messaging.outgoing import Button, OutgoingMessage
from core.storage import update_store
from core.storage.db import lock_for_write, unit_of_work
from core.storage.models import Conversation
from core.students.eligibility import Policy

__all__ = ["ConversationService", "engine_config"]

log = logging.getLogger(__name__)
# The turn reads and writes its conversation with Core statements: the ORM's identity map and
# flush for this one row cost more than the statements themselves, on every update.
_CONVERSATIONS = Conversation.__table__  # type: ignore[attr-defined]


def engine_config(ctx: AppContext, terms: Terms | None = None) -> EngineConfig:
    """The engine's texts and rules; `terms`: the version in force (else read from config/terms for today)."""
    settings = ctx.settings
    return EngineConfig(
        catalog=ctx.catalog,
        faq=ctx.faq,  # one per context, shared with the mailbox reader and the web console
        terms=terms or load_terms(settings.config_layers("terms"), ctx.clock.today()),
        policy=Policy(settings.policy),
        pesel_hasher=ctx.box.pesel_hash,
        default_language=settings.default_language,
        chat_code_ttl_minutes=settings.limits.chat_code_ttl_minutes,
        activation_window_days=settings.credential.activation_window_days,
    )


class ConversationService:
    """The front-ends' single entry point: `handle(event)` -> replies (also queued when asked)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        # The terms are looked up again as the service runs: a new version placed in
        # config/terms (or one whose date has come) is in force without a restart.
        self.terms = TermsSource(ctx.settings.config_layers("terms"), today=ctx.clock.today())
        self._terms_seen = self.terms.current(ctx.clock.today())
        self.config = engine_config(ctx, self._terms_seen)

    def _current_config(self) -> EngineConfig:
        """The engine's config with the terms in force now (read again only when they changed)."""
        terms = self.terms.current(self.ctx.clock.today())
        if terms is not self._terms_seen:
            self._terms_seen = terms
            self.config = dataclasses.replace(self.config, terms=terms)
        return self.config

    def handle(self, event: Event, *, queue_channel: str | None = None,
               stored_update: int | None = None) -> list[Reply]:
        """Handle one event in one unit of work.

        With `queue_channel`, the replies are also queued in the outbox (keyed by the event
        id, so a redelivered event queues nothing new) in the same commit as the state.
        `stored_update`: the row of the webhook update this event came from (core.storage.update_store),
        marked handled in that same commit.
        """
        with unit_of_work(self.ctx.engine) as session:
            conversation_id, stored_state = self._load(session, event)
            if stored_update is not None:
                update_store.mark_handled(session, stored_update, self.ctx.clock.now())
            state = ConversationState.from_json(stored_state)
            if event.event_id and event.event_id in state.handled:
                return []
            executor = Executor(self.ctx, session, event)
            flow = step(self._current_config(), state, event, self.ctx.clock.now())
            try:
                request = next(flow)
                while True:
                    request = flow.send(executor.run(request))
            except StopIteration as finished:
                replies: list[Reply] = finished.value
            state.remember(event.event_id)
            now = self.ctx.clock.now()
            if state.forgotten:
                session.execute(sa.delete(_CONVERSATIONS).where(_CONVERSATIONS.c.id == conversation_id))
            else:
                session.execute(sa.update(_CONVERSATIONS).where(_CONVERSATIONS.c.id == conversation_id)
                                .values(state=state.to_json(), updated_at=now))
            if queue_channel:
                self._queue(session, event, replies, queue_channel, state.language or "pl")
        return replies

    def _load(self, session: Session, event: Event) -> tuple[int, str | None]:
        """The conversation's id and stored state, locked for this turn; a new row for a new account."""
        table = _CONVERSATIONS
        query = sa.select(table.c.id, table.c.state).where(
            table.c.channel == event.channel, table.c.account_id == event.account_id)
        lock_for_write(session)  # SQLite: the write lock, as FOR UPDATE does on PostgreSQL
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()  # one event of an account at a time
        found = session.execute(query).first()
        if found is not None:
            return found.id, found.state
        now = self.ctx.clock.now()
        created = session.execute(sa.insert(table).values(
            channel=event.channel, account_id=event.account_id, state="{}", created_at=now, updated_at=now,
        ).returning(table.c.id)).scalar_one()
        return created, None

    def _queue(self, session: Session, event: Event, replies: list[Reply], channel: str, language: str) -> None:
        # _load took the conversation's lock, so enqueue_under_lock may skip per-row SAVEPOINTs.
        event_key = event.event_id or uuid.uuid4().hex
        messages = [
            (f"reply:{channel}:{event.account_id}:{event_key}:{index}",
             OutgoingMessage(text=reply.text,
                             buttons=[[Button(b.label, b.data) for b in row] for row in reply.buttons]))
            for index, reply in enumerate(coalesce_replies(replies))
        ]
        outbox.enqueue_under_lock(session, self.ctx.box, messages, channel=channel, recipient=event.account_id,
                                  kind="chat-reply", now=self.ctx.clock.now(), language=language)

    def state_of(self, channel: str, account_id: str) -> ConversationState:
        with Session(self.ctx.engine) as session:
            row = session.exec(select(Conversation).where(
                Conversation.channel == channel, Conversation.account_id == account_id)).first()
            return ConversationState.from_json(row.state if row else None)
