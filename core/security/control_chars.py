"""Control characters out of inbound text: what a stranger types must not steer a terminal.

A subject, a body, a display name or a chat message may carry ESC sequences (clear the
screen, hide text, set the window title) or C1 controls; stored raw, they would run in the
operator's terminal the moment `mleg threads show` prints them. Every channel strips them
where its input is parsed (mail/parse.py, the chat's events, the staff room's answers), so
what is stored is only text. Newline and tab stay (they are the text's layout); a carriage
return becomes a newline (alone, it returns the cursor and lets a line overwrite another).

One `str.translate` pass: linear in the text, whatever it holds.
"""

from __future__ import annotations

__all__ = ["strip_controls"]

_KEEP = {ord("\n"), ord("\t")}
# C0 (U+0000-U+001F), DEL (U+007F) and C1 (U+0080-U+009F), but newline and tab.
_DROP: dict[int, int | None] = {
    code: None for code in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)) if code not in _KEEP
}
_DROP[ord("\r")] = ord("\n")


def strip_controls(text: str) -> str:
    """`text` without C0/C1 control characters (newline and tab kept, CR as newline)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text.translate(_DROP)
