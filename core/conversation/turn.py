"""One event being handled: the engine's configuration, the turn (state, replies, text helpers)
and the words every step shares (yes and no, the yes button's data).

Every module of the engine works on a `Turn`; this one does no I/O and yields nothing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.app.catalog import Catalog, days_text
from core.conversation import ops
from core.conversation.events import Event, Reply, ReplyButton
from core.conversation.state import ConversationState
from core.conversation.terms import Terms
from core.credentials.compose import format_datetime
from core.students.eligibility import Policy
from core.support.faq import Faq
from core.understanding import Understood

__all__ = [
    "CONFIRM_YES", "INTENT_BUTTON", "NO_INTENTS", "NO_WORDS", "YES_INTENTS", "YES_WORDS",
    "Buttons", "EngineConfig", "Flow", "Steps", "Turn", "clean_text",
]

# A handler of one event: yields storage requests, returns replies for its caller to add.
Flow = Generator[ops.Op, Any, list[Reply]]
# A handler that adds its replies to the turn itself.
Steps = Generator[ops.Op, Any, None]
# Rows of (label key under `button.`, callback data).
Buttons = list[list[tuple[str, str]]]

# A yes button's data is this plus what it confirms ("request", "replace", "renew", "revoke", "support").
CONFIRM_YES = "confirm:yes:"
# Answers to a yes/no question typed instead of pressing a button ("t"/"n" as on Polish forms).
YES_WORDS = frozenset({"tak", "t", "yes", "y", "ok", "okay", "potwierdzam", "confirm"})
NO_WORDS = frozenset({"nie", "n", "no", "anuluj", "cancel"})
# Typed intents (core.understanding) that answer a yes/no question, and the ones that change something:
# each of those leads to the same confirmation as its button, never straight to the action.
YES_INTENTS = frozenset({"yes", "accept_terms"})
NO_INTENTS = frozenset({"no", "decline_terms", "cancel"})
# Buttons offering one of the likeliest meanings of a text not clearly understood ("intent:<name>").
INTENT_BUTTON = "intent:"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\ufeff]")


@dataclass(frozen=True)
class EngineConfig:
    """What the engine knows besides the state: texts, FAQ, terms and the rules in force."""

    catalog: Catalog
    faq: Faq
    terms: Terms
    policy: Policy
    pesel_hasher: Callable[[str], str]
    default_language: str = "pl"
    chat_code_ttl_minutes: int = 15
    activation_window_days: int = 30
    max_text: int = 4000


def clean_text(raw: str, limit: int) -> tuple[str, bool]:
    """Control and invisible characters out, NFC, length capped; says if it was cut."""
    text = _CONTROL.sub("", unicodedata.normalize("NFC", raw.replace("\r\n", "\n"))).strip()
    return (text[:limit], True) if len(text) > limit else (text, False)


class Turn:
    """One event being handled: the state, the replies so far, and text helpers."""

    def __init__(self, config: EngineConfig, state: ConversationState, event: Event, now: datetime) -> None:
        self.config = config
        self.state = state
        self.event = event
        self.now = now
        self.replies: list[Reply] = []
        self.text, self.truncated = clean_text(event.text, config.max_text)
        self.spoken: str | None = None  # the language of this turn's replies once the state is wiped
        self._understood: Understood | None = None

    # --- saying things -------------------------------------------------------------------
    @property
    def lang(self) -> str:
        return self.state.language or self.spoken or self.config.default_language

    def t(self, key: str, **params: Any) -> str:
        """The text of `key` in the student's language, as the issuing policy in force words it."""
        return self.config.catalog.text(self.lang, self.policy_key(key), **params)

    def say(self, key: str, buttons: Buttons | None = None, **params: Any) -> None:
        self.say_text(self.t(key, **params), buttons)

    def policy_key(self, key: str) -> str:
        """`key` as the issuing policy in force words it: `<key>_<policy>` when the catalog has one
        (e.g. `intro_els`: under the ELS policy nothing is renewed), else `key` itself. Every text
        the chat says goes through here, so an installation words any key per policy in its own
        catalog file, without code (docs/texts.md)."""
        specific = f"{key}_{self.config.policy}"
        return specific if self.config.catalog.has(self.lang, specific) else key

    def say_text(self, text: str, buttons: Buttons | None = None) -> None:
        rows = [[ReplyButton(self.t(f"button.{label}"), data) for label, data in row] for row in buttons or []]
        self.replies.append(Reply(text=text, buttons=rows))

    def when(self, moment: datetime) -> str:
        return format_datetime(moment)

    def days(self, count: int) -> str:
        return days_text(count, self.lang)

    # --- input -----------------------------------------------------------------------------
    @property
    def button(self) -> str:
        return self.event.text if self.event.kind == "button" else ""

    @property
    def command(self) -> str:
        return self.event.command

    @property
    def understood(self) -> Understood:
        """What the typed text means (core.understanding), worked out once per turn."""
        if self._understood is None:
            self._understood = self.config.faq.understand(self.text, self.lang)
        return self._understood

    @property
    def intent(self) -> str:
        """The intent of typed text ("" for a button or a command); out_of_scope when unclear."""
        return self.understood.intent if self.event.kind == "text" and self.text else ""

    def yes_no(self) -> bool | None:
        """A typed yes (True) or no (False); None for anything else."""
        if self.event.kind != "text":
            return None
        word = self.text.lower().strip(" .!")
        if word in YES_WORDS:
            return True
        if word in NO_WORDS:
            return False
        intent = self.intent
        return True if intent in YES_INTENTS else False if intent in NO_INTENTS else None

    def reset_state(self) -> None:
        """Wipe the conversation; the rest of this turn still answers in the student's language."""
        self.spoken = self.lang
        self.state.__init__()  # type: ignore[misc]
