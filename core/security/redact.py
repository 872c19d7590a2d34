"""Redaction of personal data in free text: PESEL numbers and codes a student pasted into a mail.

Support mail is written by people, and people paste their PESEL and their activation code
into it. What we keep for staff, and what we echo back (an answer's subject), goes through
`redact_personal` first: a valid PESEL is masked as everywhere else (`44*******59`), a
code is replaced by stars of its shape. Masking a number that only looks like one costs
nothing; keeping a real one in clear is the leak.

"Every form the product accepts": the chat takes a PESEL with spaces and dashes anywhere
between its digits (`core.students.pesel.normalize_pesel`), and the issuer takes an activation code
in any case with any punctuation between its symbols (`core.credentials.issuer.normalize_code`). So
both are recognised here across such separators, not only in the shape we print them.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from dataclasses import dataclass

from core.credentials.issuer import CODE_ALPHABET, CODE_GROUP_LENGTH, CODE_GROUPS, QR_TOKEN_LENGTH
from core.students.pesel import check_pesel, mask_pesel

__all__ = ["redact_personal"]

PESEL_LENGTH = 11
CODE_LENGTH = CODE_GROUPS * CODE_GROUP_LENGTH

# What normalize_pesel drops (space, tab, dash), plus what phones and mail clients put in
# their place: no-break spaces and the typographic dashes autocorrect makes of "-".
_SPACES = " \t\u00a0\u2007\u202f"
_DASHES = "\\-\u2010\u2011\u2012\u2013\u2014\u2212"
# A run of digit groups joined by those separators; each candidate PESEL in it is a whole
# number of groups, so a PESEL is never cut out of the middle of a longer number.
_DIGIT_GROUPS = re.compile(rf"(?<!\d)\d+(?:[{_SPACES}{_DASHES}]+\d+)*(?!\d)")
_DIGITS = re.compile(r"\d+")

# Between the symbols of a typed code: spaces, or one punctuation mark (with spaces around it).
_CODE_SEPARATOR = rf"[{_SPACES}]*[{_DASHES}./_·•][{_SPACES}]*|[{_SPACES}]+"
# Tokens are whole words of letters and digits in any script: a Polish word with "ż" in it is
# one word, not a code-shaped piece of one.
_TOKEN_RUN = re.compile(rf"[^\W_]+(?:(?:{_CODE_SEPARATOR})[^\W_]+)*")
_TOKEN = re.compile(r"[^\W_]+")
_SYMBOLS = frozenset(CODE_ALPHABET + CODE_ALPHABET.lower())
# Vowels of the alphabet (O and I are not in it): a word has them in every few letters, a
# random code usually not (17 of its 21 letters are consonants).
_VOWELS = frozenset("AEUY")
_CONSONANT_RUN = re.compile("[^AEUY0-9]{4}")

# The QR payload (`MLEG1:<public id>:<token>`), if someone copies it out of a decoder app.
_SYMBOL = f"[{CODE_ALPHABET}{CODE_ALPHABET.lower()}]"
_QR_PAYLOAD = re.compile(rf"MLEG1:[^\s:]+:{_SYMBOL}{{{QR_TOKEN_LENGTH}}}", re.IGNORECASE)

# A word saying that what follows (or precedes) is a code.
_CODE_WORD = r"(?:kod\w*|code\w*|has[łl]\w*|pin|aktywac\w*|activation)"
_CODE_WORD_BEFORE = re.compile(rf"(?i)\b{_CODE_WORD}\b[^\n]{{0,30}}$")
_CODE_WORD_AFTER = re.compile(rf"(?i)^[^\n]{{0,30}}?\b{_CODE_WORD}\b")

# The chat's 6-digit binding code (the chat keeps only the digits of what is typed, so also
# `482 913`), recognised only next to a word that says it is a code: a bare 6-digit number is
# as likely a postcode without its dash or an album number. Not in our own thread tag
# (`[MLEG-123456]`), which keeps threading the mail.
_SIX_DIGITS = (r"(?<!\d)(?<!\d[ -])(?<!MLEG-)"
               r"(?:\d{6}|\d{3}[ -]\d{3}|\d{2}[ -]\d{2}[ -]\d{2})"
               r"(?![ -]?\d)")
_CHAT_CODE_AFTER_WORD = re.compile(rf"(?i)(\b{_CODE_WORD}\b[^\d\n]{{0,30}}?){_SIX_DIGITS}")
_CHAT_CODE_BEFORE_WORD = re.compile(rf"(?i){_SIX_DIGITS}(?=[^\d\n]{{0,30}}?\b{_CODE_WORD}\b)")


def _ascii_digits(digits: str) -> str:
    # A full-width or other-script digit is still the student's PESEL digit.
    return "".join(str(unicodedata.digit(ch)) for ch in digits)


_PESEL_WEIGHTS = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)


def _pesel_checksum_fits(number: str) -> bool:
    # Cheap pre-filter, so a long run of small numbers costs one sum per candidate, not a parse.
    total = sum(int(d) * w for d, w in zip(number, _PESEL_WEIGHTS, strict=False))
    return (10 - total % 10) % 10 == int(number[-1])


def _windows(lengths: list[int], total: int, first: int = 0) -> list[tuple[int, int]]:
    """Non-overlapping candidates: (i, j) with lengths[i:j] summing to `total`, found left to right."""
    ends: dict[int, int] = {}
    running = 0
    for index, length in enumerate(lengths):
        running += length
        ends[running] = index + 1
    found: list[tuple[int, int]] = []
    before = sum(lengths[:first])
    for i in range(first, len(lengths)):
        j = ends.get(before + total)
        if j is not None:
            found.append((i, j))
        before += lengths[i]
    return found


def _mask_pesel_groups(match: re.Match[str]) -> str:
    run = match.group(0)
    groups = [(g.start(), g.end()) for g in _DIGITS.finditer(run)]
    digits = "".join(run[a:b] for a, b in groups)
    if not digits.isascii():
        digits = _ascii_digits(digits)
    offsets = list(itertools.accumulate((b - a for a, b in groups), initial=0))
    # "+48 ..." is an international phone number: its first group is a country code.
    international = match.start() > 0 and match.string[match.start() - 1] == "+"
    pieces: list[str] = []
    done = 0  # `run` up to here is already in `pieces`
    for i, j in _windows([b - a for a, b in groups], PESEL_LENGTH, first=1 if international else 0):
        start, end = groups[i][0], groups[j - 1][1]
        candidate = digits[offsets[i]:offsets[j]]
        if start < done or not _pesel_checksum_fits(candidate):
            continue
        number, problem = check_pesel(candidate)
        if number is not None and problem is None:
            pieces += [run[done:start], mask_pesel(number)]
            done = end
    pieces.append(run[done:])
    return "".join(pieces)


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    text: str


@functools.lru_cache(maxsize=4096)
def _word_like(token: str) -> bool:
    """A letters-only token that reads like a word rather than random symbols."""
    upper = token.upper()
    return any(ch in _VOWELS for ch in upper) and not _CONSONANT_RUN.search(upper)


def _near_code_word(text: str, start: int, end: int) -> bool:
    return bool(_CODE_WORD_BEFORE.search(text, max(0, start - 40), start)
                or _CODE_WORD_AFTER.match(text[end:end + 40]))


def _is_code(text: str, tokens: list[_Token]) -> bool:
    symbols = "".join(t.text for t in tokens)
    if symbols.isdigit():
        return False  # a number (an account, a phone): a random code is all digits once in 10^8
    printed = [len(t.text) for t in tokens] in ([CODE_LENGTH], [CODE_GROUP_LENGTH] * CODE_GROUPS)
    if not printed:
        if len(tokens) > CODE_LENGTH // 2 or any(len(t.text) < 2 for t in tokens):
            return False  # one symbol at a time: single letters and numbers in a sentence
        # Grouped some other way (`k7mnp2 qrtxwz`): accepted by the issuer, but as likely a
        # few short words; only a word saying "code" next to it, and no word look, make it one.
        return (any(ch.isdigit() for ch in symbols) or not all(_word_like(t.text) for t in tokens)) \
            and _near_code_word(text, tokens[0].start, tokens[-1].end)
    separators = [text[a.end:b.start] for a, b in itertools.pairwise(tokens)]
    if any(ch.isdigit() for ch in symbols) or symbols.isupper() or any(s.strip() for s in separators):
        return True
    # Letters only, not all capitals, spaces or nothing between: "when what they" and
    # "undercurrent" share the alphabet, so decide by how random it reads, or by a "code" nearby.
    if not all(_word_like(t.text) for t in tokens):
        return True
    return _near_code_word(text, tokens[0].start, tokens[-1].end)


def _mask_codes_in_run(match: re.Match[str]) -> str:
    text, offset = match.string, match.start()
    tokens = [_Token(offset + t.start(), offset + t.end(), t.group(0)) for t in _TOKEN.finditer(match.group(0))]
    # A token with a letter outside the alphabet can be in no code: it ends every window at it.
    lengths = [len(t.text) if _SYMBOLS.issuperset(t.text) else CODE_LENGTH + 1 for t in tokens]
    pieces: list[str] = []
    done = offset
    for i, j in _windows(lengths, CODE_LENGTH):
        window = tokens[i:j]
        if window[0].start < done or not _is_code(text, window):
            continue
        pieces += [text[done:window[0].start], re.sub(r"[^\W_]", "*", text[window[0].start:window[-1].end])]
        done = window[-1].end
    pieces.append(text[done:match.end()])
    return "".join(pieces)


def redact_personal(text: str) -> str:
    """`text` with every valid PESEL masked and anything shaped like an activation or chat code starred."""
    if not text:
        return text
    text = _DIGIT_GROUPS.sub(_mask_pesel_groups, text)
    text = _QR_PAYLOAD.sub("MLEG1:***", text)
    text = _TOKEN_RUN.sub(_mask_codes_in_run, text)
    text = _CHAT_CODE_AFTER_WORD.sub(lambda m: m.group(1) + re.sub(r"\d", "*", m.group(0)[len(m.group(1)):]),
                                     text)
    return _CHAT_CODE_BEFORE_WORD.sub(lambda m: re.sub(r"\d", "*", m.group(0)), text)
