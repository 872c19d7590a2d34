"""The sender's own words in an e-mail: quotes, forwarded mail and signatures cut off.

An old quoted answer, a forwarded student's question or a signature ("Sent from my
iPhone", a Polish name under an English question) must not decide which FAQ entry
answers, nor the language of the answer. Plain-text heuristics for the clients students
use (Gmail, Outlook, Thunderbird, Apple Mail) in Polish and English.

Everything here is linear in its input, whatever a stranger sends: the text is cut to
MAX_INPUT_CHARS first, every pattern is tried on one line at a time and only on lines no
longer than MAX_LINE_CHARS (the markers, quote headers and closing formulas it looks for are
short; a longer line is not one of them), and no loop looks at the rest of the text again
for each line. A mail of 50,000 short lines used to cost about half a minute here.
"""

from __future__ import annotations

import re

__all__ = ["addressed", "is_forward", "own_text", "question_text", "strip_signature"]

_FLAGS = re.IGNORECASE
# Outlook "PD:" (przekaż dalej), German "WG:", French "TR:" come from localized clients too.
_FORWARD_SUBJECT = re.compile(r"^\s*(?:(?:re|odp|aw)\s*:\s*)*(?:fwd?|pd|wg|tr)\s*:", _FLAGS)
_FORWARD_MARKER = re.compile(
    r"^\s*(?:-{2,}\s*(?:forwarded message|original message|wiadomość przekazana dalej|przekazana wiadomość"
    r"|wiadomość oryginalna|oryginalna wiadomość)\s*-{2,}|begin forwarded message:)\s*$", _FLAGS)
_FORWARD_ONLY = re.compile(r"forward|przekazan|begin forwarded", _FLAGS)
# "On Mon, 5 Oct 2026 at 10:00, Jan <jan@x> wrote:" / "W dniu 5.10.2026 o 10:00 Jan napisał(a):"
# / "Dnia 05.10.2026 Jan pisze:"; Gmail may wrap it onto two lines.
_ATTRIBUTION_START = re.compile(r"^\s*(?:on|w dniu|dnia)\s.+", _FLAGS)
_ATTRIBUTION_END = re.compile(r"(?:wrote|napisał\(a\)|napisał|napisała|pisze)\s*:\s*$", _FLAGS)
# Outlook's reply header: "From: ..." then "Sent: ..." (or "Od: ..." / "Wysłano: ...") within a few lines.
_HEADER_FROM = re.compile(r"^\s*\*?(?:from|od)\s*:\*?\s", _FLAGS)
_HEADER_NEXT = re.compile(r"^\s*\*?(?:sent|date|wysłano|wysłane|data|to|do|subject|temat)\s*:", _FLAGS)
_SIGNATURE_DELIMITER = re.compile(r"^--\s*$")  # RFC 3676 4.3 says "-- "; many clients drop the space
_SENT_FROM = re.compile(
    r"^\s*(?:sent from (?:my )?|sent with |get outlook for |wysłane z |wysłano z |wysłane przy użyciu "
    r"|pobierz (?:aplikację )?outlook)", _FLAGS)
# A closing formula, alone on its line or with a short name after it ("Pozdrawiam, Paweł"):
# what follows is a signature. "Thanks" only alone: "Thanks, the code expired" is a question.
_NAME = r"(?:[ ,]+[^\W\d_][\w.'-]*(?:\s+[^\W\d_][\w.'-]*){0,2})?"
_CLOSING = re.compile(
    r"^\s*(?:(?:(?:serdecznie |łączę |z )?pozdrawiam|pozdrowienia|z poważaniem|z wyrazami szacunku"
    r"|(?:best |kind |warm )?regards|best wishes|sincerely|yours sincerely|yours faithfully)[ ,.!]*" + _NAME
    + r"|(?:thanks|thank you|many thanks|cheers|best|dziękuję|dzięki)[ ,.!]*)\s*$", _FLAGS)
# A closing line counts only near the end: a long text after it is not a signature.
_MAX_SIGNATURE_LINES = 6
# What is read of a body at all (mail/parse.py keeps at most this much), and the longest line
# a pattern is tried on: a quote header, a marker or a closing formula is far shorter.
MAX_INPUT_CHARS = 100_000
MAX_LINE_CHARS = 400


def _short(line: str) -> str:
    """The line for a whole-line pattern (anchored at both ends); "" (matches none) when too long."""
    return line if len(line) <= MAX_LINE_CHARS else ""


def _lines(text: str) -> list[str]:
    return text[:MAX_INPUT_CHARS].splitlines()


def is_forward(subject: str, body: str) -> bool:
    """A forwarded mail: its question is someone else's, so a person reads it."""
    if _FORWARD_SUBJECT.match(subject[:MAX_LINE_CHARS]):
        return True
    return any(_FORWARD_MARKER.match(short) and _FORWARD_ONLY.search(short)
               for short in map(_short, _lines(body)))


def _is_attribution(lines: list[str], i: int) -> bool:
    if _ATTRIBUTION_START.match(lines[i][:MAX_LINE_CHARS]) is None:
        return False
    if _ends_attribution(lines[i]):
        return True
    return i + 1 < len(lines) and _ends_attribution(lines[i + 1])


def _ends_attribution(line: str) -> bool:
    # Anchored at the end: its last characters decide, however long the line.
    return _ATTRIBUTION_END.search(line.rstrip()[-MAX_LINE_CHARS:]) is not None


def _is_outlook_header(lines: list[str], i: int) -> bool:
    if _HEADER_FROM.match(lines[i][:MAX_LINE_CHARS]) is None:
        return False
    following = [line for line in lines[i + 1:i + 5] if line.strip()]
    return any(_HEADER_NEXT.match(line[:MAX_LINE_CHARS]) for line in following)


def own_text(body: str) -> str:
    """The body down to the first quote header, without ">" lines: the sender's own words."""
    lines = _lines(body)
    kept: list[str] = []
    for i, line in enumerate(lines):
        if _FORWARD_MARKER.match(_short(line)) or _is_attribution(lines, i) or _is_outlook_header(lines, i):
            break
        if not line.lstrip().startswith(">"):
            kept.append(line)
    return "\n".join(kept)


def strip_signature(text: str) -> str:
    """`text` without its signature: after "-- ", "Sent from my ...", or a closing formula at the end."""
    lines = _lines(text)
    for i, line in enumerate(lines):
        if _SIGNATURE_DELIMITER.match(_short(line)) or _SENT_FROM.match(line[:MAX_LINE_CHARS]):
            lines = lines[:i]
            break
    # A closing line counts only with fewer than _MAX_SIGNATURE_LINES non-blank lines after it:
    # those lines are a tail of the text, found walking back from the end once (counting the
    # rest anew for every line was quadratic).
    start, after = len(lines), 0
    while start > 0 and after < _MAX_SIGNATURE_LINES:
        start -= 1  # lines[start] has `after` non-blank lines after it
        after += bool(lines[start].strip())
    for i in range(start, len(lines)):
        if _CLOSING.match(_short(lines[i])):
            lines = lines[:i]
            break
    return "\n".join(lines).rstrip()


def question_text(subject: str, body: str) -> str:
    """What the FAQ matches and the language is told from; "" for a forwarded mail (a person answers)."""
    if is_forward(subject, body):
        return ""
    return f"{subject}\n{strip_signature(own_text(body))}"


# The polite capitalised "ty" forms of Polish ("Twoja mLegitymacja"): their capital is not the
# sentence's, so it stays after a name.
_POLITE_CAPITALS = frozenset({
    "Ty", "Ciebie", "Cię", "Tobie", "Ci", "Tobą",
    "Twój", "Twoja", "Twoje", "Twojego", "Twojej", "Twojemu", "Twoją", "Twoim", "Twoi", "Twoich",
    "Twoimi",
})


def addressed(first_name: str, sentence: str) -> str:
    """`sentence` spoken to the student by name ("Ewa, you do not have ..."): personal without a
    second greeting under the mail's own "Hello,". (Polish answers go without the name: it
    would need the vocative.)"""
    if not first_name.strip() or not sentence:
        return sentence
    first_word = sentence.split(" ", 1)[0]
    # "I sent ...", "PESEL ...", "Twoja ..." keep their capital; "Nie masz" becomes "nie masz".
    if first_word == "I" or first_word[1:2].isupper() or first_word.rstrip(",.:;!?") in _POLITE_CAPITALS:
        return f"{first_name.strip()}, {sentence}"
    return f"{first_name.strip()}, {sentence[0].lower()}{sentence[1:]}"
