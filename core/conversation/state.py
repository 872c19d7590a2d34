"""The persisted state of one chat account's conversation (JSON in the `conversation` table).

It never holds a clear PESEL: between the PESEL and the album number only its keyed hash.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

__all__ = ["ConversationState"]

HANDLED_MEMORY = 50


@dataclass
class ConversationState:
    language: str | None = None
    step: str = "new"
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
        return cls(**{k: v for k, v in data.items() if k in known})
