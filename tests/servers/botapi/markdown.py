"""Telegram MarkdownV2 as the Bot API parses it (reserved characters, nesting, links).

The bot sends HTML; this checker is kept because the stand-in's own test shows that a
MarkdownV2 text Telegram would refuse surfaces as PTB's BadRequest. Legacy ``Markdown`` is
not checked at all: the stand-in refuses it rather than pass it unchecked.
"""

from __future__ import annotations

import re

from tests.servers.botapi.errors import EntityParseError
from tests.servers.botapi.html_entities import byte_offset

_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MDV2_NAMES = {
    "*": "Bold",
    "_": "Italic",
    "__": "Underline",
    "~": "Strikethrough",
    "||": "Spoiler",
    "`": "Code",
    "```": "Pre",
    "[": "TextUrl",
}


def check_markdown_v2(text: str) -> str:
    """Check Telegram MarkdownV2 the way the Bot API does; return the plain text or raise."""
    out: list[str] = []
    stack: list[tuple[str, int]] = []
    i, n = 0, len(text)

    def reserved(ch: str) -> EntityParseError:
        return EntityParseError(
            f"Character '{ch}' is reserved and must be escaped with the preceding '\\'"
        )

    while i < n:
        c = text[i]
        top = stack[-1][0] if stack else None
        if c == "\\":
            if i + 1 < n and 0 < ord(text[i + 1]) <= 126:
                out.append(text[i + 1])
                i += 2
                continue
            raise reserved("\\")
        if top in ("`", "```"):
            if top == "```" and text.startswith("```", i):
                stack.pop()
                i += 3
            elif top == "`" and c == "`":
                stack.pop()
                i += 1
            else:
                out.append(c)
                i += 1
            continue
        if c == "`":
            if text.startswith("```", i):
                stack.append(("```", byte_offset(text, i)))
                i += 3
                # an optional language name runs to the end of the first line
                nl = text.find("\n", i)
                if nl >= 0 and re.fullmatch(r"[A-Za-z0-9_+#-]*", text[i:nl]):
                    i = nl + 1
            else:
                stack.append(("`", byte_offset(text, i)))
                i += 1
            continue
        marker: str | None = None
        if c == "*":
            marker = "*"
        elif c == "~":
            marker = "~"
        elif c == "_":
            if top == "_":
                marker = "_"
            elif text.startswith("__", i):
                marker = "__"
            else:
                marker = "_"
        elif c == "|":
            if not text.startswith("||", i):
                raise reserved("|")
            marker = "||"
        if marker is not None:
            if top == marker:
                stack.pop()
            elif any(m == marker for m, _ in stack):
                raise EntityParseError(
                    f"Can't find end of {_MDV2_NAMES[top or marker]} entity at byte offset "
                    f"{stack[-1][1]}"
                )
            else:
                stack.append((marker, byte_offset(text, i)))
            i += len(marker)
            continue
        if c == "!" and text.startswith("![", i):
            stack.append(("[", byte_offset(text, i)))
            i += 2
            continue
        if c == "[":
            stack.append(("[", byte_offset(text, i)))
            i += 1
            continue
        if c == "]":
            if top != "[":
                raise reserved("]")
            stack.pop()
            i += 1
            if i < n and text[i] == "(":
                url_start = byte_offset(text, i)
                i += 1
                while i < n and text[i] != ")":
                    i += 2 if text[i] == "\\" else 1
                if i >= n:
                    raise EntityParseError(f"Can't find end of a URL at byte offset {url_start}")
                i += 1
            continue
        if c == ">" and (i == 0 or text[i - 1] == "\n"):
            i += 1
            continue
        if c in _MDV2_RESERVED:
            raise reserved(c)
        out.append(c)
        i += 1
    if stack:
        marker, offset = stack[-1]
        raise EntityParseError(
            f"Can't find end of {_MDV2_NAMES[marker]} entity at byte offset {offset}"
        )
    return "".join(out)
