"""The persisted state of one chat account's conversation (JSON in the `conversation` table).

It never holds a clear PESEL: between the PESEL and the album number only its keyed hash.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum

__all__ = ["ConversationState", "Step"]

HANDLED_MEMORY = 50


class Step(StrEnum):
    """Where a conversation stands (core.conversation.engine draws the journey). The values are
    what the state's JSON has always held: a stored conversation reads back unchanged."""

    NEW = "new"
    LANGUAGE = "language"
    TERMS = "terms"
    DECLINED = "declined"
    PESEL = "pesel"
    SECOND_ID = "second_id"
    CODE = "code"
    MENU = "menu"
    CONFIRM_REQUEST = "confirm_request"
    CONFIRM_REPLACE = "confirm_replace"
    CONFIRM_RENEW = "confirm_renew"
    REVOKE_REASON = "revoke_reason"
    CONFIRM_REVOKE = "confirm_revoke"
    HELP_STEPS = "help_steps"
    SUPPORT_TEXT = "support_text"
    CONFIRM_SUPPORT = "confirm_support"
    CONFIRM_FORGET = "confirm_forget"


@dataclass
class ConversationState:
    language: str | None = None
    step: Step = Step.NEW
    terms_version: str | None = None
    student_id: int | None = None
    pesel_hash: str | None = None
    pending_student_id: int | None = None
    resume_menu: bool = False
    revoke_reason: str | None = None
    support_draft: str | None = None
    help_step: int = 0
    forgotten: bool = False
    handled: list[str] = field(default_factory=list)

    def remember(self, event_id: str | None) -> None:
        if event_id:
            self.handled = [*self.handled, event_id][-HANDLED_MEMORY:]

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | None) -> ConversationState:
        if not raw:
            return cls()
        data = json.loads(raw)
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in known})
        state.step = _step(data.get("step"))
        return state


def _step(stored: str | None) -> Step:
    """The stored step; one no version knows is taken as the menu, where the engine took it anyway
    (a bound chat is in the menu; an unbound one is asked the step its data says it is at)."""
    try:
        return Step(stored) if stored is not None else Step.NEW
    except ValueError:
        return Step.MENU
