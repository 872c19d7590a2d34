"""The sender's own words in an e-mail: quotes, forwarded mail and signatures cut off.

An old quoted answer, a forwarded student's question or a signature ("Sent from my
iPhone", a Polish name under an English question) must not decide which FAQ entry
answers, nor the language of the answer. Plain-text heuristics for the clients students
use (Gmail, Outlook, Thunderbird, Apple Mail) in Polish and English.
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


def is_forward(subject: str, body: str) -> bool:
    """A forwarded mail: its question is someone else's, so a person reads it."""
    if _FORWARD_SUBJECT.match(subject):
        return True
    return any(_FORWARD_MARKER.match(line) and _FORWARD_ONLY.search(line) for line in body.splitlines())


def _is_attribution(lines: list[str], i: int) -> bool:
    line = lines[i]
    if _ATTRIBUTION_START.match(line) is None:
        return False
    if _ATTRIBUTION_END.search(line):
        return True
    return i + 1 < len(lines) and _ATTRIBUTION_END.search(lines[i + 1]) is not None


def _is_outlook_header(lines: list[str], i: int) -> bool:
    if _HEADER_FROM.match(lines[i]) is None:
        return False
    following = [line for line in lines[i + 1:i + 5] if line.strip()]
    return any(_HEADER_NEXT.match(line) for line in following)


def own_text(body: str) -> str:
    """The body down to the first quote header, without ">" lines: the sender's own words."""
    lines = body.splitlines()
    kept: list[str] = []
    for i, line in enumerate(lines):
        if _FORWARD_MARKER.match(line) or _is_attribution(lines, i) or _is_outlook_header(lines, i):
            break
        if not line.lstrip().startswith(">"):
            kept.append(line)
    return "\n".join(kept)


def strip_signature(text: str) -> str:
    """`text` without its signature: after "-- ", "Sent from my ...", or a closing formula at the end."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _SIGNATURE_DELIMITER.match(line) or _SENT_FROM.match(line):
            lines = lines[:i]
            break
    for i, line in enumerate(lines):
        rest = [x for x in lines[i + 1:] if x.strip()]
        if _CLOSING.match(line) and len(rest) < _MAX_SIGNATURE_LINES:
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
