"""FAQ answers (pl, en) from `config/faq/` and a keyword/intent matcher for chat and e-mail.

The matcher is deliberately plain: weighted keyword phrases over text folded to ASCII.
It answers only when one entry clearly wins, so an unclear question goes to a person.
An entry also needs one of its topic words (mLegitymacja, kod, telefon...): a generic
phrase such as "nie istnieje" or "stolen" is about a room or a bike as often as about us.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass
from typing import Any

from core.config_files import Layers, find

__all__ = ["Faq", "FaqEntry", "FaqMatch", "Phrase", "detect_language", "fold", "stem"]

_FOLD_EXTRA = str.maketrans({"ł": "l", "Ł": "l", "ß": "ss"})
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"[.!?;\n]+")
_KEYWORD_WORD = re.compile(r"[a-z0-9]+\*?")
_POLISH_LETTERS = set("ąćęłńóśźż")


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Function words and the commonest words of support mail, folded. Words both languages
# share ("do", "to", "a", "i", "no") are in neither list: they tell nothing.
_POLISH_WORDS = _word_set("""
nie jak jaki jaka jakie mam mamy jest sa czy mi mnie sie na z ze w we juz co ale tak moj moja moje mojej
mojego moim prosze pomoc dziekuje dzien dobry witam pozdrawiam gdzie kiedy dlaczego ktory ktora ktore
oraz bo ten ta tego tej od po przez dla o u za przy jeszcze teraz moge mozna trzeba zrobic legitymacja
legitymacji legitymacje kod kodu telefon telefonu wniosek wniosku dostalem dostalam
""")
_ENGLISH_WORDS = _word_set("""
the is are was were am be been my me we our you your how what when where why which who have has had
not can could would should will please hello hi dear thanks thank regards did does it its an and or of
for with from this that there yet still just get got after before on at student phone code new
""")
# A word with Polish letters hints at Polish, but a signed name ("Paweł Łęcki") must not
# outweigh an English sentence: half a function word.
_POLISH_LETTER_WEIGHT = 0.5
# Light stemming: one common inflection ending off, so "iPhonie" meets "iphone" and
# "nowym telefonie" meets "nowy telefon". Longest ending first; the stem keeps 3 letters.
_ENDINGS = {
    "pl": ("owie", "ami", "ach", "iem", "ego", "emu", "ych", "ymi", "imi", "ich", "owi", "om", "ow", "em",
           "ej", "ym", "im", "ie", "a", "e", "i", "o", "u", "y"),
    "en": ("s",),
}
_MIN_STEM = 3
# Words a phrase may skip between two of its words: "kod wygasł" also meets
# "kod aktywacyjny mi wygasł"; never across a sentence.
MAX_GAP = 2


def fold(text: str) -> str:
    """Lower case, no diacritics (`Łódź` -> `lodz`), so students typing without Polish letters match."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD_EXTRA).lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def stem(word: str, language: str) -> str:
    """`word` (folded) without one common ending of `language`: `telefonie` -> `telefon`."""
    for ending in _ENDINGS.get(language, ()):
        if word.endswith(ending) and len(word) - len(ending) >= _MIN_STEM:
            return word[: -len(ending)]
    return word


def detect_language(text: str, default: str = "pl") -> str:
    """The language ("pl" or "en") by counting each one's common words; `default` on a tie."""
    words = _WORD.findall(fold(text))
    polish: float = sum(1 for w in words if w in _POLISH_WORDS)
    english: float = sum(1 for w in words if w in _ENGLISH_WORDS)
    polish += _POLISH_LETTER_WEIGHT * sum(
        1 for w in text.lower().split() if any(ch in _POLISH_LETTERS for ch in w))
    if polish == english:
        return default
    return "pl" if polish > english else "en"


class _Text:
    """A question folded into sentences of words, with each keyword word's hits remembered."""

    def __init__(self, text: str, language: str) -> None:
        self.sentences = [words for part in _SENTENCE.split(fold(text)) if (words := _WORD.findall(part))]
        self._stems = {w: stem(w, language) for words in self.sentences for w in words}
        self._hits: dict[_Word, frozenset[str]] = {}

    def hits(self, keyword_word: _Word) -> frozenset[str]:
        """The question's words that `keyword_word` matches."""
        found = self._hits.get(keyword_word)
        if found is None:
            found = frozenset(w for w, s in self._stems.items() if keyword_word.meets(w, s))
            self._hits[keyword_word] = found
        return found


@dataclass(frozen=True)
class _Word:
    text: str
    prefix: bool  # `kod*`: any ending
    stem: str

    def meets(self, word: str, word_stem: str) -> bool:
        return word == self.text or (self.prefix and word.startswith(self.text)) or word_stem == self.stem


@dataclass(frozen=True)
class Phrase:
    """`kod wygas*`: the words in order, up to MAX_GAP words between; `kod* & wygas*`: in any order.

    `*` ends a word stem; a word without it still matches its inflected forms (see `stem`).
    """

    words: tuple[_Word, ...]
    any_order: bool

    @classmethod
    def parse(cls, keyword: str, language: str) -> Phrase:
        any_order = "&" in keyword
        words = tuple(
            _Word(text=w.rstrip("*"), prefix=w.endswith("*"), stem=stem(w.rstrip("*"), language))
            for w in _KEYWORD_WORD.findall(fold(keyword))
        )
        return cls(words, any_order)

    def search(self, text: _Text) -> bool:
        hits = [text.hits(w) for w in self.words]
        if not all(hits):  # a word the question lacks: no sentence can have the phrase
            return False
        return any(self._in(words, hits) for words in text.sentences)

    def _in(self, words: list[str], hits: list[frozenset[str]]) -> bool:
        if self.any_order:
            return all(any(word in hit for word in words) for hit in hits)
        return any(word in hits[0] and self._follows(words, start + 1, hits[1:])
                   for start, word in enumerate(words))

    def _follows(self, words: list[str], start: int, rest: list[frozenset[str]]) -> bool:
        if not rest:
            return True
        return any(words[i] in rest[0] and self._follows(words, i + 1, rest[1:])
                   for i in range(start, min(start + MAX_GAP + 1, len(words))))


@dataclass(frozen=True)
class FaqEntry:
    id: str
    answer: str
    strong: tuple[Phrase, ...]
    weak: tuple[Phrase, ...]
    action: str | None = None
    personal: bool = False
    topic: tuple[Phrase, ...] = ()  # one must be in the question, else the entry scores nothing
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
    score: int


@dataclass(frozen=True)
class _Language:
    entries: list[FaqEntry]
    off_topic: tuple[Phrase, ...]  # e.g. the plastic card: not ours to answer automatically


def _phrases(keywords: list[str], language: str) -> tuple[Phrase, ...]:
    return tuple(Phrase.parse(k, language) for k in keywords)


def _entry(item: dict[str, Any], default_topic: list[str], language: str) -> FaqEntry:
    by_policy = tuple(
        (str(name), (override.get("answer") or "").strip() or None, override.get("action") or None)
        for name, override in item.get("policy", {}).items()
    )
    return FaqEntry(
        id=item["id"],
        answer=item["answer"].strip(),
        strong=_phrases(item.get("strong", []), language),
        weak=_phrases(item.get("weak", []), language),
        action=item.get("action") or None,
        personal=bool(item.get("personal", False)),
        topic=_phrases(item.get("topic", default_topic), language),
        by_policy=by_policy,
    )


class Faq:
    MIN_SCORE = 2
    MIN_MARGIN = 1

    def __init__(self, entries: dict[str, list[FaqEntry]],
                 off_topic: dict[str, tuple[Phrase, ...]] | None = None) -> None:
        self._languages = {lang: _Language(items, (off_topic or {}).get(lang, ()))
                           for lang, items in entries.items()}

    @classmethod
    def load(cls, directory: Layers) -> Faq:
        """`directory`: the faq folder, or such folders searched in order (see core.config_files)."""
        entries: dict[str, list[FaqEntry]] = {}
        off_topic: dict[str, tuple[Phrase, ...]] = {}
        for language in ("pl", "en"):
            with find(directory, f"{language}.toml").open("rb") as handle:
                data = tomllib.load(handle)
            default_topic = list(data.get("topic", []))
            entries[language] = [_entry(item, default_topic, language) for item in data.get("entry", [])]
            off_topic[language] = _phrases(data.get("off_topic", []), language)
        return cls(entries, off_topic)

    def entries(self, language: str) -> list[FaqEntry]:
        found = self._languages.get(language)
        return found.entries if found else []

    def get(self, language: str, entry_id: str) -> FaqEntry | None:
        return next((e for e in self.entries(language) if e.id == entry_id), None)

    def match(self, text: str, language: str) -> FaqMatch | None:
        """The clearly best entry, or None when nothing or more than one fits."""
        found = self._languages.get(language)
        if found is None:
            return None
        question = _Text(text[:4000], language)
        if any(p.search(question) for p in found.off_topic):
            return None
        scored: list[tuple[int, FaqEntry]] = []
        for entry in found.entries:
            if entry.topic and not any(p.search(question) for p in entry.topic):
                continue
            score = 2 * sum(1 for k in entry.strong if k.search(question))
            score += sum(1 for k in entry.weak if k.search(question))
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
