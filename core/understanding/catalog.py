"""The catalog of phrasings (`config/intents.toml`): example texts per intent and language.

Each `[intent.NAME]` or `[faq.ENTRY]` table is one *topic*: what the classifier learns to tell
apart. A topic belongs to one intent and may name the FAQ entry that answers it, so several FAQ
entries can share an intent ("about": what it is, its cost, changed personal data).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.understanding.text import fold

__all__ = ["ACTION_INTENTS", "INTENTS", "IntentCatalog", "Topic"]

INTENTS = (
    "apply", "renew", "revoke", "revoke_lost_phone", "new_phone", "status_validity", "activation_help",
    "activation_data_missing", "chat_code_missing", "eligibility", "els_card", "mobywatel_app", "about",
    "human", "forget_data", "accept_terms", "decline_terms", "yes", "no", "cancel", "greeting", "thanks",
    "out_of_scope",
)
# Intents that change something for the student: a wrong one costs more than asking back.
ACTION_INTENTS = frozenset({"apply", "renew", "revoke", "revoke_lost_phone", "new_phone", "forget_data"})
LANGUAGES = ("pl", "en")
# What names a language when the catalog's [language] table does not: the codes and own names.
_LANGUAGE_NAMES = {"pl": "pl", "polski": "pl", "en": "en", "english": "en"}


@dataclass(frozen=True)
class Topic:
    label: str  # "intent" or "intent/faq-entry"
    intent: str
    faq: str | None
    slots: tuple[tuple[str, str], ...]
    examples: dict[str, tuple[str, ...]] = field(default_factory=dict)  # language -> phrasings


@dataclass(frozen=True)
class IntentCatalog:
    topics: tuple[Topic, ...]
    shorthand: dict[str, str]
    emoji: dict[str, str]
    # What a student may type to choose the chat's language (folded) -> "pl" or "en".
    language_names: dict[str, str] = field(default_factory=lambda: dict(_LANGUAGE_NAMES))

    @classmethod
    def load(cls, path: Path) -> IntentCatalog:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
        return cls.parse(data, str(path))

    @classmethod
    def parse(cls, data: dict[str, Any], where: str = "catalog") -> IntentCatalog:
        topics: list[Topic] = []
        for name, table in data.get("intent", {}).items():
            if name not in INTENTS:
                raise ValueError(f"{where}: [intent.{name}] is not one of the intents {', '.join(INTENTS)}")
            topics.append(_topic(name, name, table.get("faq"), table))
        for entry, table in data.get("faq", {}).items():
            intent = table.get("intent")
            if intent not in INTENTS:
                raise ValueError(f"{where}: [faq.{entry}] needs `intent = ` one of {', '.join(INTENTS)}")
            topics.append(_topic(f"{intent}/{entry}", intent, entry, table))
        missing = [i for i in INTENTS if not any(t.intent == i for t in topics)]
        if missing:
            raise ValueError(f"{where}: no examples for the intents {', '.join(missing)}")
        return cls(tuple(topics), {str(k): str(v) for k, v in data.get("shorthand", {}).items()},
                   {str(k): str(v) for k, v in data.get("emoji", {}).items()},
                   _language_names(data.get("language"), where))

    def faq_for(self, intent: str) -> str | None:
        """The FAQ entry that answers `intent` as a whole (its `[intent.X]` table's `faq`)."""
        return next((t.faq for t in self.topics if t.label == intent), None)

    def examples(self) -> list[tuple[str, str, str]]:
        """(text, topic label, language) for every phrasing."""
        return [(text, t.label, lang) for t in self.topics for lang, texts in t.examples.items() for text in texts]


def _topic(label: str, intent: str, faq: Any, table: dict[str, Any]) -> Topic:
    slots = tuple((str(k), str(v)) for k, v in (table.get("slots") or {}).items())
    examples = {lang: tuple(str(x) for x in table.get(lang, [])) for lang in LANGUAGES}
    return Topic(label, intent, str(faq) if faq else None, slots, examples)


def _language_names(table: Any, where: str) -> dict[str, str]:
    if table is None:
        return dict(_LANGUAGE_NAMES)
    unknown = sorted(set(table) - set(LANGUAGES))
    if unknown:
        raise ValueError(f"{where}: [language] names the languages {', '.join(LANGUAGES)}, not {', '.join(unknown)}")
    return {**_LANGUAGE_NAMES, **{fold(" ".join(str(name).split())): language
                                  for language, names in table.items() for name in names}}
