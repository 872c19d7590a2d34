"""A test driver for the conversation engine: type, press buttons, read replies and queued mail."""

from __future__ import annotations

import itertools
import re

from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.conversation import ConversationService, Event, Reply
from core.messaging.outbox import open_body
from core.storage.models import OutboxMessage

_ids = itertools.count(1)


class ChatDriver:
    def __init__(self, ctx: AppContext, account: str | None = None, channel: str = "console") -> None:
        self.ctx = ctx
        self.service = ConversationService(ctx)
        self.channel = channel
        self.account = account or f"acct-{next(_ids)}"
        self.replies: list[Reply] = []

    def send(self, event: Event) -> list[Reply]:
        self.replies = self.service.handle(event)
        assert self.replies, f"no reply to {event}"
        return self.replies

    def say(self, text: str, event_id: str | None = None) -> list[Reply]:
        return self.send(Event.text_message(self.channel, self.account, text, event_id=event_id))

    def press(self, data: str) -> list[Reply]:
        offered = [b.data for r in self.replies for row in r.buttons for b in row]
        assert data in offered, f"button {data!r} not offered; offered: {offered}"
        return self.send(Event(kind="button", channel=self.channel, account_id=self.account, text=data))

    def press_anyway(self, data: str) -> list[Reply]:
        """A stale button from an older message."""
        return self.send(Event(kind="button", channel=self.channel, account_id=self.account, text=data))

    @property
    def text(self) -> str:
        return "\n".join(r.text for r in self.replies)

    @property
    def buttons(self) -> list[str]:
        return [b.data for r in self.replies for row in r.buttons for b in row]

    def outbox(self, kind: str | None = None) -> list[OutboxMessage]:
        with Session(self.ctx.engine) as session:
            query = select(OutboxMessage).order_by(col(OutboxMessage.id))
            if kind:
                query = query.where(OutboxMessage.kind == kind)
            return list(session.exec(query).all())

    def binding_code(self) -> str:
        row = self.outbox("binding-code")[-1]
        text = open_body(self.ctx.box, row).text
        match = re.search(r"\b(\d{6})\b", text)
        assert match, text
        return match.group(1)

    def start_in(self, language: str = "pl") -> None:
        self.say("/start")
        self.press(f"lang:{language}")
        self.press("terms:accept")

    def identify(self, pesel: str, second: str, language: str = "pl") -> None:
        self.start_in(language)
        self.say(pesel)
        self.say(second)
        self.say(self.binding_code())
