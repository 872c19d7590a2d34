"""Telegram's checks on a text the bot sends: its ``parse_mode`` entities and its length."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.servers.botapi.errors import ApiError, EntityParseError
from tests.servers.botapi.html_entities import check_html
from tests.servers.botapi.markdown import check_markdown_v2
from tests.servers.botapi.state import StandInState

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024

# Legacy "Markdown" is missing on purpose: nothing here checks it, and a text that no checker
# read must not pass as if Telegram had accepted it, so it is refused like an unknown mode.
_CHECKERS: dict[str, Callable[[str], str]] = {"html": check_html, "markdownv2": check_markdown_v2}


def plain_text(text: str, parse_mode: str | None, check: bool) -> str:
    """The text as the user sees it; with ``check``, a malformed one answers Telegram's 400."""
    parser = _CHECKERS.get((parse_mode or "").lower())
    if parse_mode and parser is None:
        raise ApiError(400, "Bad Request: unsupported parse_mode")
    if parser is None:
        return text
    try:
        return parser(text)
    except EntityParseError as exc:
        if check:
            raise ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        return text


def checked_text(s: StandInState, text: Any, parse_mode: Any, limit: int, what: str) -> str:
    """The plain text of a message (``what``: "message") or caption, within ``limit`` characters;
    the checks are those the stand-in's ``check_entities`` and ``check_lengths`` switch on."""
    plain = plain_text(str(text), str(parse_mode) if parse_mode else None, s.check_entities)
    if s.check_lengths and len(plain) > limit:
        raise ApiError(400, f"Bad Request: {what} is too long")
    return plain
