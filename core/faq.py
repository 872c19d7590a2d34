"""FAQ answers (pl, en) from `config/faq/` and a keyword/intent matcher for chat and e-mail.

The matcher is deliberately plain: weighted keyword phrases over text folded to ASCII.
It answers only when one entry clearly wins, so an unclear question goes to a person.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Faq", "FaqEntry", "FaqMatch", "detect_language", "fold"]

_FOLD_EXTRA = str.maketrans({"ł": "l", "Ł": "l", "ß": "ss"})
_WORD = re.compile(r"[a-z0-9]+")
_POLISH_LETTERS = set("ąćęłńóśźż")
_POLISH_WORDS = {
    "nie", "jak", "mam", "jest", "czy", "mi", "sie", "się", "do", "na", "dzien", "dzień", "dobry",
    "legitymacja", "legitymacji", "kod", "telefon", "prosze", "proszę", "moja", "moj", "mój", "co", "zrobic",
}
_ENGLISH_WORDS = {
    "the", "is", "my", "how", "do", "i", "have", "not", "what", "can", "code", "phone", "please",
    "hello", "new", "did", "does", "to", "a", "an", "it", "student",
}


def fold(text: str) -> str:
    """Lower case, no diacritics (`Łódź` -> `lodz`), so students typing without Polish letters match."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD_EXTRA).lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def detect_language(text: str, default: str = "pl") -> str:
    lowered = text.lower()
    if any(ch in _POLISH_LETTERS for ch in lowered):
        return "pl"
    words = set(_WORD.findall(fold(lowered)))
    polish = len(words & {fold(w) for w in _POLISH_WORDS})
    english = len(words & _ENGLISH_WORDS)
    if polish == english:
        return default
    return "pl" if polish > english else "en"


def _pattern(keyword: str) -> re.Pattern[str]:
    """`kod wygas*` matches "kod wygasl", "kod wygasnie": `*` ends a word stem."""
    parts = [re.escape(word.rstrip("*")) + (r"[a-z0-9]*" if word.endswith("*") else "")
             for word in fold(keyword).split()]
    return re.compile(r"(?<![a-z0-9])" + r"[^a-z0-9]+".join(parts) + r"(?![a-z0-9])")


@dataclass(frozen=True)
class FaqEntry:
    id: str
    answer: str
    strong: tuple[re.Pattern[str], ...]
    weak: tuple[re.Pattern[str], ...]
    action: str | None = None
    personal: bool = False


@dataclass(frozen=True)
class FaqMatch:
    entry: FaqEntry
    score: int


class Faq:
    MIN_SCORE = 2
    MIN_MARGIN = 1

    def __init__(self, entries: dict[str, list[FaqEntry]]) -> None:
        self._entries = entries

    @classmethod
    def load(cls, directory: Path) -> Faq:
        entries: dict[str, list[FaqEntry]] = {}
        for language in ("pl", "en"):
            with (directory / f"{language}.toml").open("rb") as handle:
                data = tomllib.load(handle)
            entries[language] = [
                FaqEntry(
                    id=item["id"],
                    answer=item["answer"].strip(),
                    strong=tuple(_pattern(k) for k in item.get("strong", [])),
                    weak=tuple(_pattern(k) for k in item.get("weak", [])),
                    action=item.get("action") or None,
                    personal=bool(item.get("personal", False)),
                )
                for item in data.get("entry", [])
            ]
        return cls(entries)

    def entries(self, language: str) -> list[FaqEntry]:
        return self._entries.get(language, [])

    def get(self, language: str, entry_id: str) -> FaqEntry | None:
        return next((e for e in self.entries(language) if e.id == entry_id), None)

    def match(self, text: str, language: str) -> FaqMatch | None:
        """The clearly best entry, or None when nothing or more than one fits."""
        folded = fold(text[:4000])
        scored: list[tuple[int, FaqEntry]] = []
        for entry in self.entries(language):
            score = 2 * sum(1 for k in entry.strong if k.search(folded))
            score += sum(1 for k in entry.weak if k.search(folded))
            if score:
                scored.append((score, entry))
        if not scored:
            return None
        scored.sort(key=lambda pair: pair[0], reverse=True)
        best_score, best = scored[0]
        runner_up = scored[1][0] if len(scored) > 1 else 0
        if best_score < self.MIN_SCORE or best_score - runner_up < self.MIN_MARGIN:
            return None
        return FaqMatch(best, best_score)
