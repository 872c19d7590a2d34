"""MIME parsing of incoming support mail: raw bytes in, `core.support.mailbox_rules.InboundFacts` out.

Real mail is messy: Polish mail comes in UTF-8, ISO-8859-2 and Windows-1250, declared or
not, headers in RFC 2047 encoded-words or raw 8-bit, file names in RFC 2231. Nothing here
raises on a bad charset: it falls back (declared -> UTF-8 -> Windows-1250 with
replacement), so a message is always readable by a person.

Only text parts are decoded; attachments are listed by name and never decoded, so a big
attachment costs no extra copies beyond the parsed tree.

A stranger writes the input, so every transformation of its text is linear and bounded:
an HTML body is cut to MAX_HTML_CHARS before it is read, and its tags are found by a single
left-to-right scan (str.find), not by regular expressions (`<[^>]+>` over `<<<<...` or
`<style<style...` was quadratic: a 200 KB body held the interpreter for half a minute).
Control characters (ESC sequences for the operator's terminal) are stripped from every
field (core.security.control_chars). mail/guard.py runs all of this in a worker process with a time
limit, for what the stdlib's MIME parser might still do with a hostile mail.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses

from core.security.control_chars import strip_controls
from core.support.mail_sender import MAX_RESULTS_CHARS, MAX_RESULTS_HEADERS
from core.support.mailbox_rules import AUTO_HEADERS, InboundFacts

__all__ = ["decode_text", "identity", "parse_inbound", "skeleton"]

# No control characters inside (an ESC sequence is not an id, and ids are shown to staff).
_MSGID = re.compile(r"<[^<>\s\x00-\x1f\x7f-\x9f]+>")
# A tag's name, read from its first characters only (a tag may be a megabyte long).
_TAG_NAME = re.compile(r"(/?)([a-zA-Z][a-zA-Z0-9]{0,15})")
_TAG_NAME_CHARS = 20
# Elements whose content is not words (CSS, scripts, the page title); an unclosed one
# (a cut-off mail) runs to the end.
_INVISIBLE = frozenset({"style", "script", "head", "title"})
_INVISIBLE_END = {name: re.compile(rf"</{name}\s*>", re.IGNORECASE) for name in _INVISIBLE}
# Tags that end a line: <br>, and the end of a paragraph, block, row, item or heading.
_LINE_BREAK = frozenset({"br"})
_LINE_END = frozenset({"p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6"})
_CHARSET_ALIASES = {
    # Labels seen in the wild that Python does not know, mapped to what they mean.
    "x-unknown": "utf-8", "unknown-8bit": "utf-8", "cp-1250": "cp1250", "win-1250": "cp1250",
    "iso8859-2": "iso-8859-2", "latin2": "iso-8859-2", "utf8": "utf-8",
}
MAX_TEXT_CHARS = 100_000
# HTML is read up to this much (Outlook's markup is often ten times its text).
MAX_HTML_CHARS = 10 * MAX_TEXT_CHARS
MAX_HEADER_BYTES = 2 * 1024 * 1024
# Mails above this size are parsed from their skeleton (big attachments cut short).
SKELETON_ABOVE = 1024 * 1024
SKELETON_KEEP_BYTES = 4096


def decode_text(data: bytes, charset: str | None) -> str:
    """Bytes of a text part as str: the declared charset, else UTF-8, else Windows-1250."""
    tried: list[str] = []
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        name = _CHARSET_ALIASES.get(candidate.strip().strip('"').lower(), candidate.strip().strip('"').lower())
        if name in tried:
            continue
        tried.append(name)
        try:
            return data.decode(name)
        except (LookupError, UnicodeDecodeError):
            continue
    # Windows-1250 decodes nearly any byte, and it is the likeliest undeclared Polish charset.
    return data.decode("cp1250", errors="replace")


def _repair(value: str) -> str:
    """Raw 8-bit header bytes arrive as surrogate escapes; decode them as text after all."""
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    return decode_text(value.encode("utf-8", "surrogateescape"), None)


def _header(message: Message, name: str) -> str | None:
    try:
        value = message.get(name)
    except Exception:  # a header the policy cannot parse (`From: jan@`, `Message-ID: <>`): its raw text
        # Not get_all(): it parses through the same policy and raises again.
        value = next((v for k, v in message.raw_items() if k.lower() == name.lower()), None)
    if value is None:
        return None
    try:
        text = str(value)
    except Exception:
        text = repr(value)
    return strip_controls(_repair(" ".join(text.split())))


def _message_ids(value: str | None) -> list[str]:
    return _MSGID.findall(value or "")


def _header_end(raw: bytes) -> int:
    """Offset of the blank line that ends the header block, or -1 when there is none."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else -1


def identity(raw: bytes) -> tuple[str | None, str]:
    """(Message-ID, dedupe digest) from the headers only: cheap, done before storing.

    The digest is the Message-ID's when there is one, so the same mail delivered twice
    (To and Cc, a list and a person) is one; without it, a hash of the content that does not
    depend on the trace headers each delivery adds.
    """
    # Only the header block is parsed: the whole of a 25 MB mail would cost ten times its size.
    head_end = _header_end(raw)
    head = raw[:head_end + 2] if 0 <= head_end < MAX_HEADER_BYTES else raw[:MAX_HEADER_BYTES]
    headers = BytesHeaderParser(policy=policy.compat32).parsebytes(head)
    ids = _message_ids(str(headers.get("Message-ID", "")))
    if ids:
        return ids[0][:255], hashlib.sha256(b"mid:" + ids[0].encode()).hexdigest()
    # A memoryview, not a slice: hashing the body must not copy it. Without a blank line the
    # whole message is hashed: `raw[-1:]` (what find's -1 gave) made every such mail that
    # ended in the same byte a "duplicate", and the second one was never stored.
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    body = memoryview(raw)[max(end, 0):]
    digest = hashlib.sha256(b"nomid:")
    for name in ("From", "To", "Date", "Subject"):
        digest.update(str(headers.get(name, "")).encode(errors="replace") + b"\0")
    digest.update(body)
    return None, digest.hexdigest()


_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]+)"|([^\s;"]+))', re.IGNORECASE)
_CONTENT_TYPE = re.compile(rb"^content-type:\s*([!-~]+?)\s*(?:;|$)", re.IGNORECASE | re.MULTILINE)


def _lines(raw: bytes) -> Iterator[memoryview]:
    """The lines of `raw` with their endings, as views (no copies)."""
    view = memoryview(raw)
    start = 0
    while start < len(raw):
        end = raw.find(b"\n", start)
        end = len(raw) if end < 0 else end + 1
        yield view[start:end]
        start = end


def skeleton(raw: bytes, keep: int = SKELETON_KEEP_BYTES) -> bytes:
    """The message with the bodies of big non-text parts cut to their first `keep` bytes.

    Every header (file names included) and every text part stay, so the facts are the same;
    what goes is what parse_inbound never decodes. A big attachment would otherwise be held
    as lines, then as one string, by the stdlib parser: about eight times its size.
    """
    out: list[bytes | memoryview] = []
    boundaries: list[bytes] = []  # the enclosing multiparts' delimiters, innermost last
    in_headers, header_block = True, bytearray()
    skipping, kept = False, 0
    for line in _lines(raw):
        stripped = bytes(line[:200]).rstrip(b"\r\n \t")
        if not in_headers and stripped.startswith(b"--"):
            hit = next((i for i in range(len(boundaries) - 1, -1, -1)
                        if stripped in (b"--" + boundaries[i], b"--" + boundaries[i] + b"--")), None)
            if hit is not None:
                closing = stripped.endswith(b"--") and stripped != b"--" + boundaries[hit]
                del boundaries[hit + 1:]
                if closing:
                    boundaries.pop()
                else:
                    in_headers, header_block = True, bytearray()
                skipping, kept = False, 0
                out.append(line)
                continue
        if in_headers:
            out.append(line)
            if stripped:
                header_block += line
                continue
            in_headers = False
            match = _CONTENT_TYPE.search(bytes(header_block))
            content_type = match.group(1).lower() if match else b"text/plain"
            if content_type.startswith(b"multipart/"):
                found = _BOUNDARY.search(bytes(header_block))
                if found:
                    boundaries.append(found.group(1) or found.group(2))
            skipping = not content_type.startswith((b"text/", b"multipart/", b"message/"))
            kept = 0
            continue
        if skipping:
            if kept >= keep:
                continue
            kept += len(line)
        out.append(line)
    return b"".join(out)


def _text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    return decode_text(data, part.get_content_charset())


def _body_text(message: EmailMessage) -> str:
    try:
        body = message.get_body(preferencelist=("plain", "html"))
    except Exception:
        body = None
    if body is None:
        if message.get_content_maintype() == "text":
            body = message
        else:
            return ""
    text = _text_of(body)
    if body.get_content_subtype() == "html":
        text = _html_text(text[:MAX_HTML_CHARS])
    return strip_controls(text[:MAX_TEXT_CHARS])


def _html_text(markup: str) -> str:
    """Readable text of an HTML part: no tags, and no CSS or scripts, which are not words.

    One scan from left to right; every step moves past what it has read, and each search
    (str.find, or a pattern that starts with `</name`) starts where the last one ended, so the
    cost is linear in the markup whatever it holds. Outlook puts pages of CSS in
    <head><style>: stripping only the tags would leave it as text.
    """
    out: list[str] = []
    pos, end = 0, len(markup)
    while pos < end:
        lt = markup.find("<", pos)
        if lt < 0:
            out.append(markup[pos:])
            break
        out.append(markup[pos:lt])
        if markup.startswith("<!--", lt):  # a comment; an unclosed one runs to the end
            close = markup.find("-->", lt + 4)
            out.append(" ")
            pos = end if close < 0 else close + 3
            continue
        gt = markup.find(">", lt + 1)
        if gt < 0:  # no tag can end after here: the rest is text, `<` and all
            out.append(markup[lt:])
            break
        if gt == lt + 1:  # "<>" is not a tag
            out.append("<>")
            pos = gt + 1
            continue
        pos = gt + 1
        named = _TAG_NAME.match(markup, lt + 1, min(gt, lt + 1 + _TAG_NAME_CHARS))
        name = named.group(2).lower() if named else ""
        closing = bool(named and named.group(1))
        if name in _INVISIBLE and not closing:
            if markup[gt - 1] != "/":  # <title/> has no content to skip
                found = _INVISIBLE_END[name].search(markup, pos)
                pos = end if found is None else found.end()
            out.append(" ")
        elif name in _LINE_BREAK or (closing and name in _LINE_END):
            out.append("\n")
        else:
            out.append(" ")
    text = html.unescape("".join(out))
    return "\n".join(" ".join(line.split()) for line in text.splitlines()).strip()


def _attachment_names(message: EmailMessage) -> list[str]:
    names: list[str] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        try:
            filename = part.get_filename()  # RFC 2231 and RFC 2047 names, decoded by the policy
        except Exception:
            filename = None
        if filename or part.get_content_disposition() == "attachment":
            names.append(strip_controls(_repair(str(filename or "(no name)")))[:200])
    return names


def _auto_headers(message: Message) -> dict[str, str]:
    """The vendor auto-reply headers (core.support.mailbox_rules.AUTO_HEADERS) this mail carries, by lower-case name."""
    found: dict[str, str] = {}
    for name, value in message.raw_items():  # raw: no header parsing for a yes/no question
        key = name.lower()
        if key in AUTO_HEADERS and key not in found:
            found[key] = strip_controls(_repair(" ".join(str(value).split())))[:200]
    return found


def _authentication_results(message: Message) -> list[str]:
    """The Authentication-Results values, top first, raw and unfolded (core.support.mail_sender decides)."""
    found: list[str] = []
    for name, value in message.raw_items():  # raw: the policy's header parsing is not needed
        if name.lower() == "authentication-results" and len(found) < MAX_RESULTS_HEADERS:
            found.append(_repair(" ".join(str(value)[:MAX_RESULTS_CHARS].split())))
    return found


def parse_inbound(raw: bytes, *, size: int | None = None, oversize: bool = False) -> InboundFacts:
    """Facts for the rules; `raw` may be only the head of an over-size message."""
    message = BytesParser(policy=policy.default).parsebytes(skeleton(raw) if len(raw) > SKELETON_ABOVE else raw)
    assert isinstance(message, EmailMessage)
    from_value = _header(message, "From") or ""
    addresses = getaddresses([from_value])
    name, address = addresses[0] if addresses else ("", "")
    address = address.strip().lower() if "@" in address else ""
    return_path = _header(message, "Return-Path")
    return InboundFacts(
        sender=address,
        sender_name=strip_controls(_repair(name))[:120],
        subject=(_header(message, "Subject") or "")[:255],
        text=_body_text(message),
        message_id=next(iter(_message_ids(_header(message, "Message-ID"))), None),
        in_reply_to=next(iter(_message_ids(_header(message, "In-Reply-To"))), None),
        references=_message_ids(_header(message, "References"))[-20:],
        auto_submitted=_header(message, "Auto-Submitted"),
        precedence=_header(message, "Precedence"),
        list_headers=any(key.lower().startswith("list-") for key in message),
        auto_response_suppress=_header(message, "X-Auto-Response-Suppress"),
        content_type=message.get_content_type(),
        return_path=None if return_path is None else return_path.strip("<> "),
        size=size if size is not None else len(raw),
        oversize=oversize,
        attachments=_attachment_names(message),
        auto_headers=_auto_headers(message),
        authentication_results=_authentication_results(message),
    )
