"""FAQ answers (pl, en) from `config/faq/`, and which one a student's text asks for.

The answers are data; which entry a text asks about is told by `core.understanding` (the
same understanding the chat uses), trained from the phrasings in `config/intents.toml`. An
entry is given only when one intent clearly wins and that intent has an answer, so an
unclear question goes to a person.

An answer that states a window the settings set says it as a placeholder, `{activation_window}` or
`{renewal_window}` (WINDOWS), filled once at load with the setting in words and the noun form the
number takes ("30 dni", "1 dzień", "14 days"): an installation that shortens a window is not
contradicted by its own FAQ. The chat, the mailbox and the console's ready texts all read the
filled answers.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.app.catalog import days_text
from core.app.config_files import Layers, find, shipped_dir
from core.app.settings_sections import CredentialSettings
from core.understanding import Understanding, Understood, fold, load_understanding

__all__ = ["WINDOWS", "Faq", "FaqEntry", "FaqMatch", "fold"]

# The catalog of phrasings, beside the FAQ folder in the configuration directory.
CATALOG_NAME = "intents.toml"
# The placeholders an answer may use, and the setting (credential.*, in days) each one states.
WINDOWS = {"activation_window": "activation_window_days", "renewal_window": "renewal_window_days"}
_PLACEHOLDER = re.compile(r"\{(\w*)\}")


@dataclass(frozen=True)
class FaqEntry:
    id: str
    answer: str
    action: str | None = None
    personal: bool = False
    # Per issuing policy ("els", "standalone"): (policy, answer or None, action or None), from
    # an optional `[entry.policy.<name>]` table; what it leaves out is the entry's own.
    by_policy: tuple[tuple[str, str | None, str | None], ...] = ()

    def answer_for(self, policy: str) -> str:
        """The answer under the issuing policy in force (settings.policy)."""
        return next((answer for name, answer, _ in self.by_policy if name == policy and answer), self.answer)

    def action_for(self, policy: str) -> str | None:
        """The chat button under the issuing policy in force."""
        return next((action for name, _, action in self.by_policy if name == policy and action), self.action)


@dataclass(frozen=True)
class FaqMatch:
    entry: FaqEntry
    understood: Understood

    @property
    def score(self) -> float:
        return self.understood.confidence


def _windows(credential: CredentialSettings, language: str) -> dict[str, str]:
    return {name: days_text(getattr(credential, setting), language) for name, setting in WINDOWS.items()}


def _fill(text: str, values: dict[str, str], where: str) -> str:
    """`text` with its placeholders filled; one the FAQ does not know fails the load, so a typo
    stops the service at start rather than reach a student as "{activation_windw}"."""
    def value(match: re.Match[str]) -> str:
        if match[1] not in values:
            raise ValueError(f"{where}: unknown placeholder {match[0]}; an answer may use "
                             + ", ".join(f"{{{name}}}" for name in values))
        return values[match[1]]
    return _PLACEHOLDER.sub(value, text)


def _entry(item: dict[str, Any], values: dict[str, str], where: str) -> FaqEntry:
    where = f"{where}: entry {item.get('id')!r}"
    by_policy = tuple(
        (str(name), _fill((override.get("answer") or "").strip(), values, where) or None,
         override.get("action") or None)
        for name, override in item.get("policy", {}).items()
    )
    return FaqEntry(
        id=item["id"],
        answer=_fill(item["answer"].strip(), values, where),
        action=item.get("action") or None,
        personal=bool(item.get("personal", False)),
        by_policy=by_policy,
    )


class Faq:
    def __init__(self, entries: dict[str, list[FaqEntry]], understanding: Understanding) -> None:
        self._entries = entries
        self.understanding = understanding

    @classmethod
    def load(cls, directory: Layers, catalog: Path | None = None, *,
             credential: CredentialSettings | None = None) -> Faq:
        """The answers in `directory` (the faq folder, or such folders searched in order, see
        core.app.config_files) and the understanding trained from `catalog` (default: `intents.toml`
        beside the first of those folders that has one, else the shipped one). `credential`: the
        settings the answers' windows state (default: the settings' defaults)."""
        credential = credential or CredentialSettings()
        entries: dict[str, list[FaqEntry]] = {}
        for language in ("pl", "en"):
            path = find(directory, f"{language}.toml")
            with path.open("rb") as handle:
                data = tomllib.load(handle)
            values = _windows(credential, language)
            entries[language] = [_entry(item, values, str(path)) for item in data.get("entry", [])]
        if catalog is None:
            folders = [directory] if isinstance(directory, Path) else list(directory)
            # A FAQ folder of its own (tests, a trial) without a catalog beside it: the shipped phrasings.
            catalog = next((c for folder in folders if (c := folder.parent / CATALOG_NAME).is_file()),
                           shipped_dir() / CATALOG_NAME)
        # An entry the catalog names but this folder lacks is simply not answered (a person is).
        return cls(entries, load_understanding(catalog))

    def entries(self, language: str) -> list[FaqEntry]:
        return self._entries.get(language, [])

    def get(self, language: str, entry_id: str) -> FaqEntry | None:
        return next((e for e in self.entries(language) if e.id == entry_id), None)

    def language(self, text: str, default: str) -> str:
        """The language ("pl" or "en") `text` is written in; `default` when it does not tell."""
        return self.understanding.language(text, default)

    def understand(self, text: str, language: str) -> Understood:
        return self.understanding.understand(text, language)

    def entry_for(self, understood: Understood, language: str) -> FaqEntry | None:
        """The answer for what was understood, when it is clear and has one."""
        if not understood.clear or understood.faq_entry is None:
            return None
        return self.get(language, understood.faq_entry)

    def match(self, text: str, language: str, *, min_confidence: float = 0.0) -> FaqMatch | None:
        """The entry `text` clearly asks for, answered in `language`; None when none clearly wins
        or the understanding is less sure than `min_confidence`."""
        understood = self.understand(text, language)
        if understood.confidence < min_confidence:
            return None
        entry = self.entry_for(understood, language)
        return FaqMatch(entry, understood) if entry is not None else None
