"""Rendering for Telegram: HTML escaping, splitting at Telegram's length limit, inline keyboards.

Pure functions, no I/O: the channel senders call them, and tests call them directly.
Telegram counts a message's length in UTF-16 code units after entity parsing, that is
of the plain text (`&lt;` counts as one `<`), so that is what a chunk is measured in.
"""

from __future__ import annotations

import html

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from core.messaging.outgoing import Button

__all__ = ["MAX_CAPTION", "MAX_TEXT", "escape", "keyboard", "split_for_telegram", "utf16_len"]

MAX_TEXT = 4096
MAX_CAPTION = 1024
# Break at a paragraph, else a line, else a space, if that keeps at least this share of a chunk.
_MIN_FILL = 0.5


def escape(text: str) -> str:
    """Plain text to Telegram-HTML: only `<`, `>` and `&` are special there (`_*[` are not)."""
    return html.escape(text, quote=False)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _cut(text: str, limit: int) -> int:
    """The longest prefix of `text` that fits in `limit` UTF-16 units (an emoji takes two)."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > limit:
            return index
    return len(text)


def split_for_telegram(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Split plain text into chunks Telegram accepts (at most `limit`), at natural breaks."""
    chunks: list[str] = []
    rest = text.strip("\n")
    while rest:
        fits = max(1, _cut(rest, limit))
        if fits >= len(rest):
            chunks.append(rest)
            break
        head = rest[:fits]
        cut = fits
        for separator in ("\n\n", "\n", " "):
            at = head.rfind(separator)
            if at >= fits * _MIN_FILL:
                cut = at
                break
        chunk = rest[:cut].rstrip()
        if chunk:
            chunks.append(chunk)
        rest = rest[cut:].lstrip(" \n") if cut < len(rest) else ""
    return chunks or [""]


def keyboard(rows: list[list[Button]]) -> InlineKeyboardMarkup | None:
    """An inline keyboard for the engine's buttons; the button data is the callback_data."""
    if not rows:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in rows if row]
    )
