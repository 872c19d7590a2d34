"""Telegram-HTML as the Bot API parses it: the tags it knows, its entities, its error wording.

The bot sends every text with ``parse_mode=HTML``, so this checker is what catches a text the
real Telegram would refuse with "can't parse entities".
"""

from __future__ import annotations

import re

from tests.servers.botapi.errors import EntityParseError

_HTML_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "tg-emoji",
        "code",
        "pre",
        "blockquote",
    }
)
_HTML_ENTITY_RE = re.compile(r"&(#[0-9]{1,7}|#x[0-9a-fA-F]{1,6}|lt|gt|amp|quot);")
_HTML_ATTR_RE = re.compile(r"""\s*([a-zA-Z-]+)\s*(?:=\s*("[^"]*"|'[^']*'|[^\s>]+))?""")


def byte_offset(text: str, index: int) -> int:
    """Telegram's error messages count UTF-8 bytes, not characters."""
    return len(text[:index].encode("utf-8"))


def check_html(text: str) -> str:
    """Check Telegram-HTML the way the Bot API does; return the plain text or raise."""
    out: list[str] = []
    stack: list[tuple[str, int]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "&":
            m = _HTML_ENTITY_RE.match(text, i)
            if m:
                ref = m.group(1)
                named = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
                if ref in named:
                    out.append(named[ref])
                else:
                    code = int(ref[2:], 16) if ref[1] in "xX" else int(ref[1:])
                    out.append(chr(code) if 0 < code < 0x110000 else "\ufffd")
                i = m.end()
            else:
                out.append(c)
                i += 1
            continue
        if c != "<":
            out.append(c)
            i += 1
            continue
        offset = byte_offset(text, i)
        if text.startswith("</", i):
            end = text.find(">", i)
            if end < 0:
                raise EntityParseError(f"Unclosed end tag at byte offset {offset}")
            name = text[i + 2 : end].strip().lower()
            if not stack:
                raise EntityParseError(f"Unexpected end tag at byte offset {offset}")
            if name != stack[-1][0]:
                raise EntityParseError(
                    f"Unmatched end tag at byte offset {offset}, expected "
                    f'"</{stack[-1][0]}>", found "</{name}>"'
                )
            stack.pop()
            i = end + 1
            continue
        m = re.match(r"<([a-zA-Z][a-zA-Z0-9-]*)", text[i:])
        name = m.group(1).lower() if m else ""
        if name not in _HTML_TAGS:
            raise EntityParseError(f'Unsupported start tag "{name}" at byte offset {offset}')
        j = i + 1 + len(name)
        attrs: dict[str, str] = {}
        while True:
            while j < n and text[j].isspace():
                j += 1
            if j >= n:
                raise EntityParseError(f"Unclosed start tag at byte offset {offset}")
            if text[j] == ">":
                break
            am = _HTML_ATTR_RE.match(text, j)
            if not am or am.end() == j:
                raise EntityParseError(
                    f'Empty attribute name in the tag "{name}" at byte offset {offset}'
                )
            value = am.group(2) or ""
            if value[:1] in "\"'":
                value = value[1:-1]
            attrs[am.group(1).lower()] = value
            j = am.end()
        if name == "span" and attrs.get("class") != "tg-spoiler":
            raise EntityParseError('Tag "span" must have class "tg-spoiler"')
        if name == "tg-emoji" and not attrs.get("emoji-id"):
            raise EntityParseError('Tag "tg-emoji" must have attribute "emoji-id"')
        stack.append((name, offset))
        i = j + 1
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return "".join(out)
