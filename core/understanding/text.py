"""How a student's text is made comparable before it is classified.

Lower case, emoji said in words, no diacritics (`zgubiłem` and `zgubilem` are one word),
letters held down collapsed (`takkk`), chat shorthand spelt out (`tel` -> `telefon`), and, as an
option measured by bench.understanding --compare, a word the catalog never uses put right when it
is a typo of one it does (rapidfuzz; off by default: the character n-grams carry typos better).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping

__all__ = ["Normaliser", "fold"]

_FOLD_EXTRA = str.maketrans({"ł": "l", "Ł": "l", "ß": "ss"})
_NOT_WORD = re.compile(r"[^a-z0-9]+")
_HELD_DOWN = re.compile(r"([a-z])\1{2,}")
# A typo is put right only in a word this long: "tak" and "tam" are both words, not typos.
_MIN_TYPO_LENGTH = 5
# rapidfuzz's ratio (0-100) from which an unknown word is taken for a catalog word.
_TYPO_SCORE = 80.0


def fold(text: str) -> str:
    """Lower case, no diacritics (`Łódź` -> `lodz`), so students typing without Polish letters match."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD_EXTRA).lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


class Normaliser:
    """Text -> folded words, with the catalog's shorthand, emoji and vocabulary."""

    def __init__(self, shorthand: Mapping[str, str], emoji: Mapping[str, str]) -> None:
        self._shorthand = {fold(k): fold(v) for k, v in shorthand.items()}
        # Longest first, and without the variation selector a keyboard may add ("❤️").
        self._emoji = sorted(((k.replace("\ufe0f", ""), f" {fold(v)} ") for k, v in emoji.items()),
                             key=lambda pair: -len(pair[0]))
        self._vocabulary: frozenset[str] = frozenset()
        self._choices: list[str] = []
        self._fixed: dict[str, str] = {}

    def learn(self, texts: Iterable[str]) -> None:
        """The words the catalog uses: an unknown word near one of them is taken for a typo of it."""
        words = {w for text in texts for w in self.words(text, fix_typos=False)}
        self._vocabulary = frozenset(words)
        self._choices = sorted(w for w in words if len(w) >= _MIN_TYPO_LENGTH - 1)
        self._fixed = {}

    def words(self, text: str, *, fix_typos: bool = False) -> list[str]:
        text = text.replace("\ufe0f", "")
        for emoji, words in self._emoji:
            if emoji in text:
                text = text.replace(emoji, words)
        plain = _HELD_DOWN.sub(r"\1\1", _NOT_WORD.sub(" ", fold(text)))
        out: list[str] = []
        for word in plain.split():
            word = self._shorthand.get(word, word)
            if fix_typos:
                word = self._fix(word)
            out.extend(word.split())
        return out

    def normalise(self, text: str) -> str:
        return " ".join(self.words(text))

    def _fix(self, word: str) -> str:
        if word in self._vocabulary or len(word) < _MIN_TYPO_LENGTH or word.isdigit():
            return word
        known = self._fixed.get(word)
        if known is None:
            from rapidfuzz import fuzz, process  # optional (bench.understanding --compare): not a dependency

            found = process.extractOne(word, self._choices, scorer=fuzz.ratio, score_cutoff=_TYPO_SCORE)
            known = found[0] if found else word
            if len(self._fixed) < 10_000:  # bounded: a stranger can type any number of new words
                self._fixed[word] = known
        return known
