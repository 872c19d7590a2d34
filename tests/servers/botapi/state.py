"""A local Telegram Bot API stand-in: a loopback HTTP server python-telegram-bot can talk to.

It speaks the Bot API methods the bot uses (getMe, getUpdates with long polling, webhooks,
commands, sendMessage, sendPhoto, edits, callback answers, chat/member lookups, forum
topics, ...) in Telegram's exact response shapes, checks Telegram's limits (message length,
``parse_mode`` entities, flood limits) and lets a test inject updates and inspect every
outgoing call. It is a real listening TCP server (``ThreadingHTTPServer`` in a background
thread), so a bot in another process (``mleg serve``) can be pointed at it too::

    api = BotApiStandIn().start()
    app = (ApplicationBuilder().token(api.token).base_url(api.base_url)
           .base_file_url(api.base_file_url).build())
    api.push_text(chat_id=42, user_id=42, text="hello")
    api.wait_for_messages(42, 1)          # or: await api.await_messages(42, 1)
    api.stop()

All test-side methods are thread-safe. Blocking waits (``wait_for_*``) must not be called
from the event loop the bot runs in; use the ``await_*`` twins there.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import math
import re
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "DEFAULT_TOKEN",
    "ApiCall",
    "BotApiStandIn",
    "SentMessage",
    "UploadedFile",
    "check_html",
    "check_markdown",
    "check_markdown_v2",
    "post_update_to_webhook",
]

DEFAULT_TOKEN = "7000000001:AAH-local_stand-in_token_for_tests"
TOKEN_RE = re.compile(r"^(\d{1,20}):([A-Za-z0-9_-]{1,100})$")
MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MEMBER_STATUSES = ("creator", "administrator", "member", "restricted", "left", "kicked")
DEFAULT_UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
_SEND_METHODS = frozenset({"sendMessage", "sendPhoto", "sendDocument"})
_POLLING_METHODS = frozenset({"getUpdates"})
# Parameters PTB sends JSON-encoded inside form fields, and parameters that are integers.
_JSON_PARAMS = frozenset(
    {
        "reply_markup",
        "reply_parameters",
        "allowed_updates",
        "commands",
        "scope",
        "link_preview_options",
        "entities",
        "caption_entities",
        "media",
        "rights",
        "menu_button",
    }
)
_INT_PARAMS = frozenset(
    {
        "message_id",
        "user_id",
        "message_thread_id",
        "offset",
        "limit",
        "timeout",
        "reply_to_message_id",
        "cache_time",
        "max_connections",
        "icon_color",
    }
)
_TRUE_ONLY_METHODS = frozenset(
    {
        "setMyDescription",
        "setMyShortDescription",
        "setMyName",
        "setChatMenuButton",
        "setMyDefaultAdministratorRights",
    }
)


class _ApiError(Exception):
    """An error answer in Telegram's shape."""

    def __init__(
        self, code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters:
            out["parameters"] = self.parameters
        return out


class EntityParseError(ValueError):
    """A ``parse_mode`` text Telegram would refuse; the message is Telegram's wording."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class UploadedFile:
    """One file part of a multipart/form-data request."""

    field_name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass(frozen=True)
class ApiCall:
    """One Bot API request the stand-in answered."""

    method: str
    params: dict[str, Any]
    files: dict[str, UploadedFile]
    token: str
    http_method: str
    status: int
    response: dict[str, Any]
    at: float

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))


@dataclass
class SentMessage:
    """A message the bot sent (and its current state after edits)."""

    chat_id: int
    message_id: int
    method: str
    text: str | None
    plain_text: str | None
    parse_mode: str | None
    reply_markup: dict[str, Any] | None
    message_thread_id: int | None = None
    reply_to_message_id: int | None = None
    photo: bytes | None = None
    photo_ref: str | None = None
    document: bytes | None = None
    filename: str | None = None
    date: int = 0
    edits: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False

    @property
    def caption(self) -> str | None:
        return self.text if self.method != "sendMessage" else None

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """The inline keyboard's buttons, row after row, flattened."""
        if not self.reply_markup:
            return []
        rows = self.reply_markup.get("inline_keyboard") or self.reply_markup.get("keyboard") or []
        out: list[dict[str, Any]] = []
        for row in rows:
            for button in row:
                out.append(button if isinstance(button, dict) else {"text": str(button)})
        return out

    @property
    def button_texts(self) -> list[str]:
        return [str(b.get("text", "")) for b in self.buttons]

    def callback_data(self, button_text: str) -> str:
        """The callback_data of the inline button whose text contains ``button_text``."""
        for button in self.buttons:
            if button_text in str(button.get("text", "")) and "callback_data" in button:
                return str(button["callback_data"])
        raise KeyError(f"no inline button {button_text!r} in {self.button_texts}")


# --------------------------------------------------------------------------- entity checks


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


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
        offset = _byte_offset(text, i)
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
                stack.append(("```", _byte_offset(text, i)))
                i += 3
                # an optional language name runs to the end of the first line
                nl = text.find("\n", i)
                if nl >= 0 and re.fullmatch(r"[A-Za-z0-9_+#-]*", text[i:nl]):
                    i = nl + 1
            else:
                stack.append(("`", _byte_offset(text, i)))
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
                stack.append((marker, _byte_offset(text, i)))
            i += len(marker)
            continue
        if c == "!" and text.startswith("![", i):
            stack.append(("[", _byte_offset(text, i)))
            i += 2
            continue
        if c == "[":
            stack.append(("[", _byte_offset(text, i)))
            i += 1
            continue
        if c == "]":
            if top != "[":
                raise reserved("]")
            stack.pop()
            i += 1
            if i < n and text[i] == "(":
                url_start = _byte_offset(text, i)
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


def check_markdown(text: str) -> str:
    """Check legacy Telegram Markdown (unclosed ``* _ ` ``` [``); return the plain text."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.append(text[i + 1])
            i += 2
            continue
        if c in "*_`[":
            start = _byte_offset(text, i)
            closer = {"*": "*", "_": "_", "`": "`", "[": "]"}[c]
            if text.startswith("```", i):
                closer, c = "```", "```"
            end = text.find(closer, i + len(c))
            if end < 0:
                raise EntityParseError(
                    f"Can't find end of the entity starting at byte offset {start}"
                )
            out.append(text[i + len(c) : end])
            i = end + len(closer)
            if c == "[" and i < n and text[i] == "(":
                close = text.find(")", i)
                if close < 0:
                    raise EntityParseError(
                        f"Can't find end of the entity starting at byte offset {start}"
                    )
                i = close + 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _plain_text(text: str, parse_mode: str | None, check: bool) -> str:
    mode = (parse_mode or "").lower()
    parser: Callable[[str], str] | None = {
        "html": check_html,
        "markdownv2": check_markdown_v2,
        "markdown": check_markdown,
    }.get(mode)
    if parse_mode and parser is None:
        raise _ApiError(400, "Bad Request: unsupported parse_mode")
    if parser is None:
        return text
    try:
        return parser(text)
    except EntityParseError as exc:
        if check:
            raise _ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        return text


# --------------------------------------------------------------------------- request parsing


def _parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, Any], dict[str, Any]]:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise _ApiError(400, "Bad Request: multipart boundary not found")
    delimiter = b"--" + m.group(1).encode("latin-1")
    fields: dict[str, Any] = {}
    files: dict[str, Any] = {}
    header_parser = BytesHeaderParser()
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, _, content = chunk.partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        headers = header_parser.parsebytes(head + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        filename = headers.get_filename()
        if filename is not None:
            files[name] = UploadedFile(
                field_name=name,
                filename=filename,
                content_type=headers.get_content_type(),
                data=content,
            )
        else:
            charset = headers.get_content_charset() or "utf-8"
            fields[name] = content.decode(charset, errors="replace")
    return fields, files


def _normalize(params: dict[str, Any]) -> dict[str, Any]:
    out = dict(params)
    for key in _JSON_PARAMS & out.keys():
        value = out[key]
        if isinstance(value, str):
            try:
                out[key] = json.loads(value) if value else None
            except ValueError:
                raise _ApiError(400, f"Bad Request: can't parse {key} JSON object") from None
    for key in _INT_PARAMS & out.keys():
        value = out[key]
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            out[key] = int(value)
    if isinstance(out.get("chat_id"), str) and re.fullmatch(r"-?\d+", out["chat_id"].strip()):
        out["chat_id"] = int(out["chat_id"])
    return out


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _image_size(data: bytes) -> tuple[int, int]:
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            seg_len = int.from_bytes(data[i + 2 : i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(width), int(height)
            i += 2 + seg_len
    return 320, 320


def post_update_to_webhook(
    update: dict[str, Any], url: str, secret_token: str | None = None, timeout: float = 5.0
) -> int:
    """POST one update to a bot's webhook the way Telegram does; return the HTTP status."""
    headers = {"Content-Type": "application/json"}
    if secret_token:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret_token
    request = urllib.request.Request(
        url, data=json.dumps(update).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    standin: BotApiStandIn


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 60
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK adds
    # ~40 ms to every answer, which real Telegram does not (it would dominate benchmarks).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.server.standin._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.standin._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        try:
            body = self._read_body()
            status, payload, content_type = self.server.standin._dispatch(
                self.command, self.path, self.headers.get("Content-Type") or "", body
            )
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True
            return
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            if status == 200 and "/send" in self.path:
                self.server.standin._answer_lost()


# --------------------------------------------------------------------------- the stand-in


class BotApiStandIn:
    """A Telegram Bot API server on loopback, with test-side injection and inspection.

    Switches (plain attributes, change them any time): ``check_lengths`` (400 for text over
    4096 / caption over 1024 characters), ``check_entities`` (400 for malformed
    ``parse_mode`` text), ``enforce_rate_limits`` (429 beyond ``per_chat_limit`` messages per
    ``per_chat_window`` s to one chat, ``group_limit`` per ``group_window`` s to a group, and
    ``global_limit`` per ``global_window`` s overall), ``strict_chats`` (400 "chat not found"
    for chats never seen nor added), ``default_member_status`` (getChatMember for users never
    seen in a chat), ``auto_deliver_webhook`` (when a webhook is set, injected updates are
    POSTed to it, as Telegram would).
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        accept_any_token: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        bot_username: str = "mleg_test_bot",
        bot_first_name: str = "mLegitymacja (test)",
        enforce_rate_limits: bool = False,
        check_lengths: bool = True,
        check_entities: bool = True,
        strict_chats: bool = False,
        auto_deliver_webhook: bool = True,
    ) -> None:
        if not TOKEN_RE.match(token):
            raise ValueError(f"not a bot token: {token!r}")
        self.token = token
        self.accept_any_token = accept_any_token
        self.host = host
        self._port = port
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        self.enforce_rate_limits = enforce_rate_limits
        self.check_lengths = check_lengths
        self.check_entities = check_entities
        self.strict_chats = strict_chats
        self.auto_deliver_webhook = auto_deliver_webhook
        # False: a getUpdates offset is not taken as confirming the updates before it (what a
        # process killed before its next getUpdates reached Telegram leaves): they come again.
        self.confirm_offsets = True
        self.default_member_status = "left"
        self.per_chat_limit, self.per_chat_window = 1, 1.0
        self.group_limit, self.group_window = 20, 60.0
        self.global_limit, self.global_window = 30, 1.0

        self._cond = threading.Condition(threading.RLock())
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._delivery_thread: threading.Thread | None = None
        self._stopping = False
        self._connections: set[socket.socket] = set()

        self._update_ids = itertools.count(1)
        self._deliveries: collections.Counter[int] = collections.Counter()
        self._update_chats: dict[int, int | None] = {}
        self._updates: deque[dict[str, Any]] = deque()
        self._allowed_updates: frozenset[str] = DEFAULT_UPDATE_TYPES
        self._poll_generation = 0
        self._chats: dict[int, dict[str, Any]] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._seen_members: set[tuple[int, int]] = set()
        self._member_status: dict[tuple[int, int], str] = {}
        self._blocked: set[int] = set()
        self._topics: dict[int, dict[int, dict[str, Any]]] = {}
        self._next_message_id: dict[int, int] = {}
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._sent: list[SentMessage] = []
        self._sent_index: dict[tuple[int, int], SentMessage] = {}
        self._calls: list[ApiCall] = []
        self._open_callbacks: set[str] = set()
        self._callback_ids = itertools.count(1)
        self._files: dict[str, tuple[bytes, str]] = {}
        self._file_ids = itertools.count(1)
        self._commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._webhook: dict[str, Any] = {}
        self._webhook_error: tuple[int, str] | None = None
        self._forced: list[dict[str, Any]] = []
        self._send_times: dict[int, deque[float]] = {}
        self._global_send_times: deque[float] = deque()
        self._rate_limited: dict[int | None, int] = {}
        self._answers_lost = 0
        self._full_chat_fields: dict[int, dict[str, Any]] = {}

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> BotApiStandIn:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        self._stopping = False
        server = _Server((self.host, self._port), _Handler)
        server.standin = self
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"botapi-standin:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Wake long polls, stop serving, close every open connection."""
        server = self._server
        if server is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        server.shutdown()
        server.server_close()
        with self._cond:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._delivery_thread is not None:
            self._delivery_thread.join(timeout=5)
        self._server = None
        self._thread = None
        self._delivery_thread = None

    def restart(self, down_seconds: float = 0.0) -> BotApiStandIn:
        """"Telegram down": stop, stay down `down_seconds`, serve again on the SAME port.

        Chats, queued updates and records survive (as at Telegram, only the connection is
        gone); clients see refused connections while it is down.
        """
        port = self.port
        self.stop()
        time.sleep(down_seconds)
        self._port = port
        return self.start()

    def __enter__(self) -> BotApiStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._cond:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("BotApiStandIn is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """For PTB's ``base_url`` / MLEG_TELEGRAM__API_BASE_URL: the token is appended."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """For PTB's ``base_file_url``: the token is appended."""
        return f"{self.url}/file/bot"

    @property
    def bot_id(self) -> int:
        return int(self.token.split(":", 1)[0])

    def bot_user(self, token: str | None = None) -> dict[str, Any]:
        """The bot's User object (for ``token``, default the stand-in's own)."""
        bot_id = int((token or self.token).split(":", 1)[0])
        return {
            "id": bot_id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
        }

    # ----------------------------------------------------------------- chats and users

    def add_chat(
        self,
        chat_id: int,
        *,
        chat_type: str | None = None,
        title: str | None = None,
        first_name: str | None = None,
        username: str | None = None,
        is_forum: bool = False,
    ) -> dict[str, Any]:
        """Declare a chat (private when ``chat_id`` > 0 unless ``chat_type`` says otherwise)."""
        with self._cond:
            chat = self._ensure_chat(chat_id, chat_type=chat_type, title=title)
            if first_name is not None and chat["type"] == "private":
                chat["first_name"] = first_name
            if username is not None:
                chat["username"] = username
            if is_forum:
                chat["type"] = "supergroup"
                chat["is_forum"] = True
            return dict(chat)

    def make_forum(self, chat_id: int, title: str = "Forum") -> None:
        """Turn ``chat_id`` into a forum supergroup (createForumTopic then works)."""
        with self._cond:
            chat = self._ensure_chat(chat_id, chat_type="supergroup", title=title)
            chat["type"] = "supergroup"
            chat.setdefault("title", title)
            chat["is_forum"] = True
            self._topics.setdefault(chat_id, {})

    def block_chat(self, chat_id: int, blocked: bool = True) -> None:
        """Sends to ``chat_id`` now answer 403 "bot was blocked by the user"."""
        with self._cond:
            if blocked:
                self._blocked.add(chat_id)
            else:
                self._blocked.discard(chat_id)

    def set_full_chat_fields(self, chat_id: int, **fields: Any) -> None:
        """getChat(chat_id) answers with these fields in place of (or besides) its own: e.g. a
        newer Bot API's shape of ``accepted_gift_types`` that the installed library cannot read."""
        with self._cond:
            self._full_chat_fields.setdefault(chat_id, {}).update(fields)

    def set_member_status(self, chat_id: int, user_id: int, status: str) -> None:
        """getChatMember(chat_id, user_id) answers with this status."""
        if status not in MEMBER_STATUSES:
            raise ValueError(f"status must be one of {MEMBER_STATUSES}")
        with self._cond:
            self._member_status[(chat_id, user_id)] = status

    def forum_topics(self, chat_id: int) -> dict[int, dict[str, Any]]:
        with self._cond:
            return {k: dict(v) for k, v in self._topics.get(chat_id, {}).items()}

    def _ensure_chat(
        self, chat_id: int, *, chat_type: str | None = None, title: str | None = None
    ) -> dict[str, Any]:
        chat = self._chats.get(chat_id)
        if chat is None:
            kind = chat_type or ("private" if chat_id > 0 else "supergroup")
            chat = {"id": chat_id, "type": kind}
            if kind == "private":
                user = self._users.get(chat_id, {})
                chat["first_name"] = user.get("first_name", f"User{chat_id}")
                for key in ("last_name", "username"):
                    if key in user:
                        chat[key] = user[key]
            else:
                chat["title"] = title or f"Chat {chat_id}"
            self._chats[chat_id] = chat
        elif title is not None and chat["type"] != "private":
            chat["title"] = title
        return chat

    def _chat_for(self, chat_id: Any) -> dict[str, Any]:
        if chat_id is None or chat_id == "":
            raise _ApiError(400, "Bad Request: chat_id is empty")
        if isinstance(chat_id, str):
            for chat in self._chats.values():
                if chat_id.startswith("@") and chat.get("username") == chat_id[1:]:
                    return chat
            raise _ApiError(400, "Bad Request: chat not found")
        chat_id = int(chat_id)
        if chat_id not in self._chats and self.strict_chats:
            raise _ApiError(400, "Bad Request: chat not found")
        return self._ensure_chat(chat_id)

    def _chat_obj(self, chat: dict[str, Any]) -> dict[str, Any]:
        return {
            k: v
            for k, v in chat.items()
            if k in ("id", "type", "title", "first_name", "last_name", "username", "is_forum")
        }

    def _alloc_message_id(self, chat_id: int) -> int:
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        return message_id

    # ----------------------------------------------------------------- injecting updates

    def _user(
        self,
        user_id: int,
        first_name: str | None,
        last_name: str | None,
        username: str | None,
        language_code: str | None,
    ) -> dict[str, Any]:
        user = self._users.setdefault(user_id, {"id": user_id, "is_bot": False})
        user["first_name"] = first_name or user.get("first_name") or f"User{user_id}"
        for key, value in (
            ("last_name", last_name),
            ("username", username),
            ("language_code", language_code),
        ):
            if value is not None:
                user[key] = value
        return dict(user)

    def _enqueue(self, payload: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self._update_ids), **payload}
        message = payload.get("message") or payload.get("edited_message") or (
            payload.get("callback_query") or {}).get("message") or {}
        self._update_chats[update["update_id"]] = message.get("chat", {}).get("id")
        self._updates.append(update)
        self._cond.notify_all()
        return update

    def push_update(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update (without ``update_id``; one is assigned) and return it."""
        with self._cond:
            return self._enqueue(payload)

    def push_message(
        self,
        chat_id: int,
        user_id: int,
        *,
        text: str | None = None,
        entities: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        chat_type: str = "private",
        chat_title: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "pl",
        message_thread_id: int | None = None,
        reply_to_message_id: int | None = None,
    ) -> dict[str, Any]:
        """Queue a ``message`` update from a user; the building block of the push_* helpers."""
        with self._cond:
            user = self._user(user_id, first_name, last_name, username, language_code)
            chat = self._ensure_chat(chat_id, chat_type=chat_type, title=chat_title)
            if chat["type"] == "private" and chat_id == user_id:
                chat["first_name"] = user["first_name"]
            self._seen_members.add((chat_id, user_id))
            message: dict[str, Any] = {
                "message_id": self._alloc_message_id(chat_id),
                "from": user,
                "chat": self._chat_obj(chat),
                "date": int(time.time()),
            }
            if message_thread_id is not None:
                message["message_thread_id"] = message_thread_id
                if chat.get("is_forum"):
                    message["is_topic_message"] = True
                    self._topics.setdefault(chat_id, {}).setdefault(
                        message_thread_id, {"message_thread_id": message_thread_id}
                    )
            if reply_to_message_id is not None:
                original = self._messages.get((chat_id, reply_to_message_id))
                message["reply_to_message"] = (
                    _strip_reply(original)
                    if original
                    else {
                        "message_id": reply_to_message_id,
                        "chat": self._chat_obj(chat),
                        "date": int(time.time()),
                    }
                )
            if text is not None:
                message["text"] = text
            if entities:
                message["entities"] = entities
            if extra:
                message.update(extra)
            self._messages[(chat_id, message["message_id"])] = message
            return self._enqueue({"message": message})

    def push_text(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        chat_type: str = "private",
        first_name: str = "Jan",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "pl",
        message_thread_id: int | None = None,
        reply_to_message_id: int | None = None,
    ) -> dict[str, Any]:
        """Queue a plain text message from ``user_id`` in ``chat_id``."""
        return self.push_message(
            chat_id,
            user_id,
            text=text,
            chat_type=chat_type,
            first_name=first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
            message_thread_id=message_thread_id,
            reply_to_message_id=reply_to_message_id,
        )

    def push_command(
        self,
        chat_id: int,
        user_id: int,
        command: str,
        args: str = "",
        *,
        chat_type: str = "private",
        first_name: str = "Jan",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "pl",
        message_thread_id: int | None = None,
    ) -> dict[str, Any]:
        """Queue ``/command args`` with its bot_command entity (``command`` may omit the /)."""
        head = command if command.startswith("/") else f"/{command}"
        text = f"{head} {args}" if args else head
        length = len(head.encode("utf-16-le")) // 2
        return self.push_message(
            chat_id,
            user_id,
            text=text,
            entities=[{"type": "bot_command", "offset": 0, "length": length}],
            chat_type=chat_type,
            first_name=first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
            message_thread_id=message_thread_id,
        )

    def push_group_text(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        chat_type: str = "supergroup",
        chat_title: str | None = None,
        first_name: str = "Anna",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "pl",
        message_thread_id: int | None = None,
        reply_to_message_id: int | None = None,
    ) -> dict[str, Any]:
        """Queue a text from ``user_id`` in a group/supergroup (e.g. the staff chat)."""
        return self.push_message(
            chat_id,
            user_id,
            text=text,
            chat_type=chat_type,
            chat_title=chat_title,
            first_name=first_name,
            last_name=last_name,
            username=username,
            language_code=language_code,
            message_thread_id=message_thread_id,
            reply_to_message_id=reply_to_message_id,
        )

    def push_sticker(
        self,
        chat_id: int,
        user_id: int,
        emoji: str = "👍",
        *,
        chat_type: str = "private",
        first_name: str = "Jan",
        language_code: str | None = "pl",
    ) -> dict[str, Any]:
        """Queue a sticker message (something the bot cannot treat as text)."""
        sticker = {
            "file_id": f"CAACAgIAAxkBAAEsticker{next(self._file_ids)}",
            "file_unique_id": "AgADsticker",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
        }
        return self.push_message(
            chat_id,
            user_id,
            extra={"sticker": sticker},
            chat_type=chat_type,
            first_name=first_name,
            language_code=language_code,
        )

    def push_callback(
        self,
        chat_id: int,
        user_id: int,
        data: str,
        message_id: int | None = None,
        *,
        first_name: str = "Jan",
        language_code: str | None = "pl",
    ) -> dict[str, Any]:
        """Queue a button press on the bot's message ``message_id`` (default: its last one)."""
        with self._cond:
            user = self._user(user_id, first_name, None, None, language_code)
            chat = self._ensure_chat(chat_id)
            if message_id is None:
                mine = [s for s in self._sent if s.chat_id == chat_id]
                if not mine:
                    raise ValueError(f"the bot sent nothing to chat {chat_id} yet")
                message_id = mine[-1].message_id
            message = self._messages.get((chat_id, message_id)) or {
                "message_id": message_id,
                "from": self.bot_user(),
                "chat": self._chat_obj(chat),
                "date": int(time.time()),
            }
            query_id = f"{next(self._callback_ids)}{user_id}"[:40]
            self._open_callbacks.add(query_id)
            return self._enqueue(
                {
                    "callback_query": {
                        "id": query_id,
                        "from": user,
                        "message": message,
                        "chat_instance": f"-{abs(chat_id)}77",
                        "data": data,
                    }
                }
            )

    def updates_for(self, chat_id: int) -> list[int]:
        """The ids of the updates queued so far from `chat_id` (messages and button presses)."""
        with self._cond:
            return [uid for uid, chat in self._update_chats.items() if chat == chat_id]

    def deliveries(self) -> dict[int, int]:
        """How many times getUpdates handed out each update (more than once: not confirmed in time)."""
        with self._cond:
            return dict(self._deliveries)

    def updates_pending(self) -> int:
        """Updates queued and not yet confirmed by a getUpdates offset (or webhook delivery)."""
        with self._cond:
            return len(self._updates)

    # ----------------------------------------------------------------- inspection

    def calls(self, method: str | None = None, *, include_polling: bool = False, since: int = 0) -> list[ApiCall]:
        """Requests answered so far (getUpdates only when asked for or ``include_polling``);
        `since`: only those after the first `since` of all requests (getUpdates included)."""
        with self._cond:
            calls = self._calls[since:]
        if method is not None:
            return [c for c in calls if c.method.lower() == method.lower()]
        if include_polling:
            return calls
        return [c for c in calls if c.method not in _POLLING_METHODS]

    def sent_messages(self, chat_id: int | None = None) -> list[SentMessage]:
        """Messages the bot sent successfully, oldest first (edits are applied in place)."""
        with self._cond:
            return [s for s in self._sent if chat_id is None or s.chat_id == chat_id]

    def last_message(self, chat_id: int | None = None) -> SentMessage:
        messages = self.sent_messages(chat_id)
        if not messages:
            raise LookupError(f"no message sent to {chat_id}")
        return messages[-1]

    def wait_for_messages(
        self, chat_id: int | None, count: int = 1, timeout: float = 5.0
    ) -> list[SentMessage]:
        """Block until ``chat_id`` (None: any chat) got ``count`` messages; return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [s for s in self._sent if chat_id is None or s.chat_id == chat_id]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"chat {chat_id}: expected {count} message(s) within {timeout}s, got "
                        f"{len(found)}: {[s.text for s in found]!r}; recent calls: "
                        f"{[(c.method, c.status) for c in self._calls[-10:]]}"
                    )
                self._cond.wait(remaining)

    def wait_for_calls(self, method: str, count: int = 1, timeout: float = 5.0) -> list[ApiCall]:
        """Block until ``method`` was called ``count`` times; return those calls."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [c for c in self._calls if c.method.lower() == method.lower()]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {count} {method} call(s) within {timeout}s, got {len(found)}"
                    )
                self._cond.wait(remaining)

    async def await_messages(
        self,
        chat_id: int | None,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - mirrors wait_for_messages
    ) -> list[SentMessage]:
        """:meth:`wait_for_messages` without blocking the event loop (the bot may run in it)."""
        return await asyncio.to_thread(self.wait_for_messages, chat_id, count, timeout)

    async def await_calls(
        self,
        method: str,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - mirrors wait_for_calls
    ) -> list[ApiCall]:
        """:meth:`wait_for_calls` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for_calls, method, count, timeout)

    def commands(
        self, *, scope: dict[str, Any] | None = None, language_code: str = ""
    ) -> list[dict[str, Any]]:
        """What setMyCommands recorded for this scope (default: BotCommandScopeDefault)."""
        with self._cond:
            return list(self._commands.get(_commands_key(scope, language_code), []))

    def all_commands(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Every recorded command list keyed by (scope JSON, language_code)."""
        with self._cond:
            return {k: list(v) for k, v in self._commands.items()}

    @property
    def webhook(self) -> dict[str, Any]:
        """The recorded setWebhook parameters (``url``, ``secret_token``, ...); {} if none."""
        with self._cond:
            return dict(self._webhook)

    def rate_limited_count(self, chat_id: int | None = None) -> int:
        """How many 429 answers were sent (all, or those for a sendX to ``chat_id``)."""
        with self._cond:
            if chat_id is None:
                return sum(self._rate_limited.values())
            return self._rate_limited.get(chat_id, 0)

    def _answer_lost(self) -> None:
        with self._cond:
            self._answers_lost += 1

    @property
    def answers_lost(self) -> int:
        """Requests carried out whose answer never reached the client (the connection was cut,
        e.g. by `stop`): the client cannot know they succeeded, so a resend of each is fair."""
        with self._cond:
            return self._answers_lost

    @property
    def too_many_requests_sent(self) -> int:
        return self.rate_limited_count()

    def file_bytes(self, file_id: str) -> bytes:
        with self._cond:
            return self._files[file_id][0]

    def reset_records(self) -> None:
        """Forget recorded calls and sent messages (chats, ids and queues stay)."""
        with self._cond:
            self._calls.clear()
            self._sent.clear()
            self._sent_index.clear()
            self._rate_limited.clear()

    # ----------------------------------------------------------------- failure injection

    def force_retry_after(
        self, count: int = 1, retry_after: int = 1, methods: Iterable[str] | None = None
    ) -> None:
        """The next ``count`` calls (of ``methods``; default any but getUpdates) answer 429."""
        self.fail_next(
            methods,
            429,
            f"Too Many Requests: retry after {retry_after}",
            count=count,
            parameters={"retry_after": retry_after},
        )

    def fail_next(
        self,
        methods: str | Iterable[str] | None,
        error_code: int,
        description: str,
        *,
        count: int = 1,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        """The next ``count`` calls of ``methods`` (None: any but getUpdates) answer an error."""
        wanted = [methods] if isinstance(methods, str) else methods
        with self._cond:
            self._forced.append(
                {
                    "methods": None if wanted is None else {m.lower() for m in wanted},
                    "remaining": count,
                    "error": (error_code, description, parameters),
                }
            )

    # ----------------------------------------------------------------- dispatch

    def _dispatch(
        self, http_method: str, raw_path: str, content_type: str, body: bytes
    ) -> tuple[int, bytes, str]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        file_match = re.match(r"^/file/bot([^/]+)/(.+)$", path)
        if file_match:
            return self._serve_file(file_match.group(1), file_match.group(2))
        match = re.match(r"^/bot([^/]*)/([A-Za-z0-9_]+)/?$", path)
        token = match.group(1) if match else ""
        method = match.group(2) if match else ""
        params: dict[str, Any] = {}
        files: dict[str, UploadedFile] = {}
        status = 200
        try:
            if not match or not TOKEN_RE.match(token):
                raise _ApiError(404, "Not Found")
            if not self.accept_any_token and token != self.token:
                raise _ApiError(401, "Unauthorized")
            params.update(parse_qsl(parts.query, keep_blank_values=True))
            ctype = content_type.split(";")[0].strip().lower()
            if ctype == "application/json" and body:
                try:
                    decoded = json.loads(body)
                except ValueError:
                    raise _ApiError(400, "Bad Request: can't parse JSON") from None
                if not isinstance(decoded, dict):
                    raise _ApiError(400, "Bad Request: JSON object expected")
                params.update(decoded)
            elif ctype == "application/x-www-form-urlencoded" and body:
                params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            elif ctype == "multipart/form-data":
                fields, files = _parse_multipart(body, content_type)
                params.update(fields)
            handler = self._handlers().get(method.lower())
            if handler is None:
                raise _ApiError(404, "Not Found: method not found")
            method = handler.__name__.removeprefix("_api_")
            params = _normalize(params)
            with self._cond:
                self._apply_forced(method)
            result = handler(self, params, files, token)
            response: dict[str, Any] = {"ok": True, "result": result}
        except _ApiError as exc:
            status = exc.code
            response = exc.body()
            if exc.code == 429:
                with self._cond:
                    chat = params.get("chat_id") if method in _SEND_METHODS else None
                    key = chat if isinstance(chat, int) else None
                    self._rate_limited[key] = self._rate_limited.get(key, 0) + 1
        with self._cond:
            self._calls.append(
                ApiCall(
                    method=method or path,
                    params=params,
                    files=files,
                    token=token,
                    http_method=http_method,
                    status=status,
                    response=response,
                    at=time.time(),
                )
            )
            self._cond.notify_all()
        return status, json.dumps(response, ensure_ascii=False).encode(), "application/json"

    def _serve_file(self, token: str, path: str) -> tuple[int, bytes, str]:
        with self._cond:
            for data, file_path in self._files.values():
                if file_path == path and TOKEN_RE.match(token):
                    return 200, data, "application/octet-stream"
        body = {"ok": False, "error_code": 404, "description": "Not Found"}
        return 404, json.dumps(body).encode(), "application/json"

    def _apply_forced(self, method: str) -> None:
        for forced in self._forced:
            methods = forced["methods"]
            if methods is None and method in _POLLING_METHODS:
                continue
            if methods is not None and method.lower() not in methods:
                continue
            forced["remaining"] -= 1
            if forced["remaining"] <= 0:
                self._forced.remove(forced)
            code, description, parameters = forced["error"]
            raise _ApiError(code, description, parameters)

    @staticmethod
    def _handlers() -> dict[str, Callable[..., Any]]:
        return _HANDLERS

    # ----------------------------------------------------------------- helpers for methods

    def _check_send_allowed(self, chat: dict[str, Any]) -> None:
        chat_id = chat["id"]
        if chat_id in self._blocked:
            if chat["type"] == "private":
                raise _ApiError(403, "Forbidden: bot was blocked by the user")
            raise _ApiError(403, "Forbidden: bot was kicked from the supergroup chat")

    def _check_rate(self, chat: dict[str, Any]) -> None:
        if not self.enforce_rate_limits:
            return
        now = time.monotonic()
        chat_id = chat["id"]
        if chat["type"] == "private":
            limit, window = self.per_chat_limit, self.per_chat_window
        else:
            limit, window = self.group_limit, self.group_window
        recent = self._send_times.setdefault(chat_id, deque())
        while recent and recent[0] <= now - window:
            recent.popleft()
        glob = self._global_send_times
        while glob and glob[0] <= now - self.global_window:
            glob.popleft()
        waits = []
        if len(recent) >= limit:
            waits.append(recent[0] + window - now)
        if len(glob) >= self.global_limit:
            waits.append(glob[0] + self.global_window - now)
        if waits:
            retry_after = max(1, math.ceil(max(waits)))
            raise _ApiError(
                429,
                f"Too Many Requests: retry after {retry_after}",
                {"retry_after": retry_after},
            )
        recent.append(now)
        glob.append(now)

    def _check_thread(self, chat: dict[str, Any], thread_id: int | None) -> None:
        if thread_id is None or not chat.get("is_forum"):
            return
        if thread_id not in self._topics.get(chat["id"], {}):
            raise _ApiError(400, "Bad Request: message thread not found")

    def _reply_target(
        self, chat: dict[str, Any], params: dict[str, Any]
    ) -> tuple[int | None, dict[str, Any] | None]:
        reply = params.get("reply_parameters")
        reply_id: int | None = params.get("reply_to_message_id")
        allow_missing = _as_bool(params.get("allow_sending_without_reply"))
        if isinstance(reply, dict):
            reply_id = int(reply["message_id"]) if "message_id" in reply else None
            allow_missing = _as_bool(reply.get("allow_sending_without_reply", allow_missing))
        if reply_id is None:
            return None, None
        original = self._messages.get((chat["id"], reply_id))
        if original is None and not allow_missing:
            raise _ApiError(400, "Bad Request: message to be replied not found")
        return reply_id, original

    def _store_bot_message(
        self,
        token: str,
        chat: dict[str, Any],
        params: dict[str, Any],
        method: str,
        text: str | None,
        plain: str | None,
        extra: dict[str, Any],
        record: dict[str, Any],
    ) -> dict[str, Any]:
        thread_id = params.get("message_thread_id")
        reply_id, original = self._reply_target(chat, params)
        message_id = self._alloc_message_id(chat["id"])
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": self.bot_user(token),
            "chat": self._chat_obj(chat),
            "date": int(time.time()),
        }
        if thread_id is not None and chat.get("is_forum"):
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if original is not None:
            message["reply_to_message"] = _strip_reply(original)
        if method == "sendMessage":
            message["text"] = plain
        elif plain:
            message["caption"] = plain
        message.update(extra)
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        self._messages[(chat["id"], message_id)] = message
        sent = SentMessage(
            chat_id=chat["id"],
            message_id=message_id,
            method=method,
            text=text,
            plain_text=plain,
            parse_mode=params.get("parse_mode") or None,
            reply_markup=markup if isinstance(markup, dict) else None,
            message_thread_id=thread_id,
            reply_to_message_id=reply_id,
            date=message["date"],
            **record,
        )
        self._sent.append(sent)
        self._sent_index[(chat["id"], message_id)] = sent
        return message

    def _text_checked(self, text: Any, parse_mode: Any, limit: int, what: str) -> str:
        plain = _plain_text(str(text), str(parse_mode) if parse_mode else None, self.check_entities)
        if self.check_lengths and len(plain) > limit:
            raise _ApiError(400, f"Bad Request: {what} is too long")
        return plain

    def _new_file_id(self, data: bytes, folder: str, suffix: str) -> tuple[str, str]:
        number = next(self._file_ids)
        file_id = f"AgACAgIAAxkDAAI{number:06d}standin"
        self._files[file_id] = (data, f"{folder}/file_{number}{suffix}")
        return file_id, f"AQAD{number:06d}"

    def _resolve_upload(
        self, name: str, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> tuple[bytes | None, str | None, str | None]:
        """(bytes, filename, reference) for a file parameter: upload, attach://, or id/URL."""
        if name in files:
            up = files[name]
            return up.data, up.filename, None
        value = params.get(name)
        if isinstance(value, str) and value.startswith("attach://"):
            up_ref = files.get(value.removeprefix("attach://"))
            if up_ref is None:
                raise _ApiError(400, f"Bad Request: file {value} not found in the request")
            return up_ref.data, up_ref.filename, None
        if isinstance(value, str) and value:
            return None, None, value
        return None, None, None


def _strip_reply(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "reply_to_message"}


def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
    if not scope:
        scope = {"type": "default"}
    return json.dumps(scope, sort_keys=True), str(language_code or "")


# --------------------------------------------------------------------------- the methods
# Each handler: (standin, params, files, token) -> result. Name: _api_<exact Telegram name>.

Params = dict[str, Any]
Files = dict[str, UploadedFile]


def _api_getMe(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    return {
        **s.bot_user(token),
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


def _api_getUpdates(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    offset = p.get("offset")
    limit = max(1, min(100, int(p.get("limit") or 100)))
    timeout = max(0.0, float(p.get("timeout") or 0))
    allowed = p.get("allowed_updates")
    deadline = time.monotonic() + timeout
    with s._cond:
        if s._webhook.get("url"):
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        s._poll_generation += 1
        generation = s._poll_generation
        s._cond.notify_all()
        if isinstance(allowed, list):
            s._allowed_updates = frozenset(allowed) if allowed else DEFAULT_UPDATE_TYPES
        if isinstance(offset, int):
            if offset < 0:
                while len(s._updates) > -offset:
                    s._updates.popleft()
            elif s.confirm_offsets:
                while s._updates and s._updates[0]["update_id"] < offset:
                    s._updates.popleft()
        while True:
            if s._stopping:
                return []
            if generation != s._poll_generation:
                raise _ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only "
                    "one bot instance is running",
                )
            # updates of kinds the bot did not ask for are dropped, as Telegram does
            for update in list(s._updates):
                kind = next(k for k in update if k != "update_id")
                if kind not in s._allowed_updates:
                    s._updates.remove(update)
            since = offset if isinstance(offset, int) and offset > 0 else 0
            batch = list(itertools.islice((u for u in s._updates if u["update_id"] >= since), limit))
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0:
                s._deliveries.update(u["update_id"] for u in batch)
                return batch
            s._cond.wait(remaining)


def _api_deleteWebhook(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        s._webhook = {}
        s._webhook_error = None
        if _as_bool(p.get("drop_pending_updates")):
            s._updates.clear()
        s._cond.notify_all()
    return True


def _api_setWebhook(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    url = str(p.get("url") or "")
    secret = p.get("secret_token")
    if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
        raise _ApiError(400, "Bad Request: secret token contains unallowed characters")
    if url and not re.match(r"^https?://", url):
        raise _ApiError(400, "Bad Request: bad webhook: Webhook can be set up only on HTTPS")
    with s._cond:
        if _as_bool(p.get("drop_pending_updates")):
            s._updates.clear()
        if not url:
            s._webhook = {}
        else:
            s._webhook = {
                "url": url,
                "secret_token": secret,
                "allowed_updates": p.get("allowed_updates"),
                "max_connections": p.get("max_connections", 40),
                "ip_address": p.get("ip_address"),
                "has_custom_certificate": "certificate" in f,
            }
            if isinstance(p.get("allowed_updates"), list):
                s._allowed_updates = frozenset(p["allowed_updates"]) or DEFAULT_UPDATE_TYPES
            if s.auto_deliver_webhook and (
                s._delivery_thread is None or not s._delivery_thread.is_alive()
            ):
                s._delivery_thread = threading.Thread(
                    target=_deliver_webhook_updates,
                    args=(s,),
                    daemon=True,
                    name="botapi-standin-webhook",
                )
                s._delivery_thread.start()
        s._webhook_error = None
        s._cond.notify_all()
    return True


def _deliver_webhook_updates(s: BotApiStandIn) -> None:
    while True:
        with s._cond:
            while not s._stopping and not (s._webhook.get("url") and s._updates):
                s._cond.wait(0.5)
            if s._stopping:
                return
            update = s._updates[0]
            url = s._webhook["url"]
            secret = s._webhook.get("secret_token")
        try:
            status = post_update_to_webhook(update, url, secret, timeout=5.0)
            error = None if 200 <= status < 300 else f"Wrong response from the webhook: {status}"
        except OSError as exc:
            error = f"Connection refused: {exc}"
        with s._cond:
            if error is None:
                if s._updates and s._updates[0] is update:
                    s._updates.popleft()
                s._webhook_error = None
            else:
                s._webhook_error = (int(time.time()), error)
                s._cond.wait(0.2)


def _api_getWebhookInfo(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        hook = s._webhook
        info: dict[str, Any] = {
            "url": hook.get("url", ""),
            "has_custom_certificate": bool(hook.get("has_custom_certificate")),
            "pending_update_count": len(s._updates),
        }
        if hook.get("url"):
            info["max_connections"] = int(hook.get("max_connections") or 40)
            info["ip_address"] = hook.get("ip_address") or "127.0.0.1"
            if hook.get("allowed_updates"):
                info["allowed_updates"] = hook["allowed_updates"]
        if s._webhook_error:
            info["last_error_date"], info["last_error_message"] = s._webhook_error
        return info


def _api_setMyCommands(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    commands = p.get("commands")
    if not isinstance(commands, list):
        raise _ApiError(400, 'Bad Request: parameter "commands" is required')
    if len(commands) > 100:
        raise _ApiError(400, "Bad Request: too many commands specified")
    for command in commands:
        if not isinstance(command, dict) or not re.fullmatch(
            r"[a-z0-9_]{1,32}", str(command.get("command", ""))
        ):
            raise _ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        if not 1 <= len(str(command.get("description", ""))) <= 256:
            raise _ApiError(400, "Bad Request: command description is empty")
    with s._cond:
        key = _commands_key(p.get("scope"), p.get("language_code"))
        s._commands[key] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
    return True


def _api_getMyCommands(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        return list(s._commands.get(_commands_key(p.get("scope"), p.get("language_code")), []))


def _api_deleteMyCommands(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        s._commands.pop(_commands_key(p.get("scope"), p.get("language_code")), None)
    return True


def _api_sendMessage(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        chat = s._chat_for(p.get("chat_id"))
        s._check_send_allowed(chat)
        text = p.get("text")
        if text is None or str(text).strip() == "":
            raise _ApiError(400, "Bad Request: message text is empty")
        plain = s._text_checked(text, p.get("parse_mode"), MAX_TEXT_LENGTH, "message")
        if not plain.strip():
            raise _ApiError(400, "Bad Request: text must be non-empty")
        s._check_thread(chat, p.get("message_thread_id"))
        s._reply_target(chat, p)
        s._check_rate(chat)
        message = s._store_bot_message(token, chat, p, "sendMessage", str(text), plain, {}, {})
        s._cond.notify_all()
        return message


def _send_file(s: BotApiStandIn, p: Params, f: Files, token: str, kind: str) -> Any:
    method = "sendPhoto" if kind == "photo" else "sendDocument"
    with s._cond:
        chat = s._chat_for(p.get("chat_id"))
        s._check_send_allowed(chat)
        data, filename, ref = s._resolve_upload(kind, p, f)
        if data is None and ref is None:
            raise _ApiError(400, f"Bad Request: there is no {kind} in the request")
        caption = p.get("caption")
        plain = (
            s._text_checked(caption, p.get("parse_mode"), MAX_CAPTION_LENGTH, "message caption")
            if caption
            else None
        )
        s._check_thread(chat, p.get("message_thread_id"))
        s._reply_target(chat, p)
        s._check_rate(chat)
        payload = data if data is not None else b""
        if data is None and ref in s._files:
            payload = s._files[str(ref)][0]
        if kind == "photo":
            file_id, unique = s._new_file_id(payload, "photos", ".jpg")
            width, height = _image_size(payload)
            extra: dict[str, Any] = {
                "photo": [
                    {
                        "file_id": file_id,
                        "file_unique_id": unique,
                        "file_size": len(payload),
                        "width": width,
                        "height": height,
                    }
                ]
            }
            record: dict[str, Any] = {"photo": data, "photo_ref": ref, "filename": filename}
        else:
            file_id, unique = s._new_file_id(payload, "documents", "")
            extra = {
                "document": {
                    "file_id": file_id,
                    "file_unique_id": unique,
                    "file_name": filename or "file",
                    "file_size": len(payload),
                }
            }
            record = {"document": data, "photo_ref": ref, "filename": filename}
        message = s._store_bot_message(
            token, chat, p, method, str(caption) if caption else None, plain, extra, record
        )
        s._cond.notify_all()
        return message


def _api_sendPhoto(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    return _send_file(s, p, f, token, "photo")


def _api_sendDocument(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    return _send_file(s, p, f, token, "document")


def _edit_target(s: BotApiStandIn, p: Params, token: str) -> tuple[dict[str, Any], SentMessage]:
    if p.get("inline_message_id"):
        raise _ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
    chat = s._chat_for(p.get("chat_id"))
    message_id = p.get("message_id")
    if not isinstance(message_id, int):
        raise _ApiError(400, "Bad Request: message identifier is not specified")
    message = s._messages.get((chat["id"], message_id))
    if message is None:
        raise _ApiError(400, "Bad Request: message to edit not found")
    sent = s._sent_index.get((chat["id"], message_id))
    if sent is None or not message.get("from", {}).get("is_bot"):
        raise _ApiError(400, "Bad Request: message can't be edited")
    return message, sent


_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)


def _api_editMessageText(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        message, sent = _edit_target(s, p, token)
        text = p.get("text")
        if text is None or str(text).strip() == "":
            raise _ApiError(400, "Bad Request: message text is empty")
        if "text" not in message:
            raise _ApiError(400, "Bad Request: there is no text in the message to edit")
        plain = s._text_checked(text, p.get("parse_mode"), MAX_TEXT_LENGTH, "message")
        markup = p.get("reply_markup")
        new_markup = markup if isinstance(markup, dict) and "inline_keyboard" in markup else None
        if plain == message.get("text") and new_markup == message.get("reply_markup"):
            raise _ApiError(400, _NOT_MODIFIED)
        message["text"] = plain
        message["edit_date"] = int(time.time())
        if new_markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = new_markup
        sent.edits.append({"text": sent.text, "reply_markup": sent.reply_markup})
        sent.text, sent.plain_text = str(text), plain
        sent.parse_mode = p.get("parse_mode") or None
        sent.reply_markup = markup if isinstance(markup, dict) else None
        s._cond.notify_all()
        return dict(message)


def _api_editMessageReplyMarkup(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        message, sent = _edit_target(s, p, token)
        markup = p.get("reply_markup")
        new_markup = markup if isinstance(markup, dict) and markup.get("inline_keyboard") else None
        if new_markup == message.get("reply_markup"):
            raise _ApiError(400, _NOT_MODIFIED)
        message["edit_date"] = int(time.time())
        if new_markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = new_markup
        sent.edits.append({"text": sent.text, "reply_markup": sent.reply_markup})
        sent.reply_markup = new_markup
        s._cond.notify_all()
        return dict(message)


def _api_deleteMessage(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        chat = s._chat_for(p.get("chat_id"))
        message_id = p.get("message_id")
        if not isinstance(message_id, int) or (chat["id"], message_id) not in s._messages:
            raise _ApiError(400, "Bad Request: message to delete not found")
        del s._messages[(chat["id"], message_id)]
        sent = s._sent_index.get((chat["id"], message_id))
        if sent is not None:
            sent.deleted = True
        return True


def _api_answerCallbackQuery(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    query_id = str(p.get("callback_query_id") or "")
    text = p.get("text")
    if text and s.check_lengths and len(str(text)) > 200:
        raise _ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
    with s._cond:
        if query_id not in s._open_callbacks:
            raise _ApiError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        s._open_callbacks.discard(query_id)
    return True


def _api_getChat(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        chat_id = p.get("chat_id")
        if isinstance(chat_id, int) and chat_id not in s._chats:
            raise _ApiError(400, "Bad Request: chat not found")
        chat = s._chat_for(chat_id)
        return {
            **s._chat_obj(chat),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
            **s._full_chat_fields.get(chat["id"], {}),
        }


def _member(status: str, user: dict[str, Any]) -> dict[str, Any]:
    if status == "creator":
        return {"status": status, "user": user, "is_anonymous": False}
    if status == "administrator":
        rights = (
            "can_manage_chat",
            "can_delete_messages",
            "can_manage_video_chats",
            "can_restrict_members",
            "can_promote_members",
            "can_change_info",
            "can_invite_users",
            "can_post_stories",
            "can_edit_stories",
            "can_delete_stories",
            "can_pin_messages",
            "can_manage_topics",
        )
        return {
            "status": status,
            "user": user,
            "can_be_edited": False,
            "is_anonymous": False,
            **dict.fromkeys(rights, True),
        }
    if status == "restricted":
        restricted_rights = (
            "can_change_info",
            "can_invite_users",
            "can_pin_messages",
            "can_send_messages",
            "can_send_polls",
            "can_send_other_messages",
            "can_add_web_page_previews",
            "can_manage_topics",
            "can_send_audios",
            "can_send_documents",
            "can_send_photos",
            "can_send_videos",
            "can_send_video_notes",
            "can_send_voice_notes",
            "can_edit_tag",
            "can_react_to_messages",
        )
        return {
            "status": status,
            "user": user,
            "is_member": True,
            "until_date": 0,
            **dict.fromkeys(restricted_rights, False),
        }
    if status == "kicked":
        return {"status": status, "user": user, "until_date": 0}
    return {"status": status, "user": user}


def _api_getChatMember(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        chat = s._chat_for(p.get("chat_id"))
        user_id = p.get("user_id")
        if not isinstance(user_id, int):
            raise _ApiError(400, "Bad Request: invalid user_id specified")
        bot_id = int(token.split(":", 1)[0])
        if user_id == bot_id:
            user = s.bot_user(token)
        else:
            user = dict(
                s._users.get(user_id)
                or {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}
            )
        status = s._member_status.get((chat["id"], user_id))
        if status is None:
            if user_id == bot_id:
                status = "member" if chat["type"] == "private" else "administrator"
            elif (chat["type"] == "private" and chat["id"] == user_id) or (
                (chat["id"], user_id) in s._seen_members
            ):
                status = "member"
            else:
                status = s.default_member_status
        return _member(status, user)


def _api_createForumTopic(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    name = str(p.get("name") or "")
    if not 1 <= len(name) <= 128:
        raise _ApiError(
            400,
            "Bad Request: TOPIC_TITLE_EMPTY" if not name else "Bad Request: TOPIC_TITLE_INVALID",
        )
    with s._cond:
        chat = s._chat_for(p.get("chat_id"))
        if not chat.get("is_forum"):
            raise _ApiError(400, "Bad Request: the chat is not a forum")
        thread_id = s._alloc_message_id(chat["id"])
        topic = {
            "message_thread_id": thread_id,
            "name": name,
            "icon_color": int(p.get("icon_color") or 7322096),
        }
        if p.get("icon_custom_emoji_id"):
            topic["icon_custom_emoji_id"] = p["icon_custom_emoji_id"]
        s._topics.setdefault(chat["id"], {})[thread_id] = topic
        s._messages[(chat["id"], thread_id)] = {
            "message_id": thread_id,
            "from": s.bot_user(token),
            "chat": s._chat_obj(chat),
            "date": int(time.time()),
            "message_thread_id": thread_id,
            "is_topic_message": True,
            "forum_topic_created": {"name": name, "icon_color": topic["icon_color"]},
        }
        return dict(topic)


def _api_sendChatAction(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        chat = s._chat_for(p.get("chat_id"))
        s._check_send_allowed(chat)
    if not p.get("action"):
        raise _ApiError(400, "Bad Request: wrong parameter action in request")
    return True


def _api_getFile(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    file_id = str(p.get("file_id") or "")
    with s._cond:
        if file_id not in s._files:
            raise _ApiError(400, "Bad Request: invalid file_id")
        data, path = s._files[file_id]
    return {
        "file_id": file_id,
        "file_unique_id": f"AQAD{file_id[-13:-7]}",
        "file_size": len(data),
        "file_path": path,
    }


def _api_close(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    return True


def _api_logOut(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
    return True


def _true_only(name: str) -> Callable[..., Any]:
    def handler(s: BotApiStandIn, p: Params, f: Files, token: str) -> Any:
        return True

    handler.__name__ = f"_api_{name}"
    return handler


_HANDLERS: dict[str, Callable[..., Any]] = {
    fn.__name__.removeprefix("_api_").lower(): fn
    for fn in (
        _api_getMe,
        _api_getUpdates,
        _api_deleteWebhook,
        _api_setWebhook,
        _api_getWebhookInfo,
        _api_setMyCommands,
        _api_getMyCommands,
        _api_deleteMyCommands,
        _api_sendMessage,
        _api_sendPhoto,
        _api_sendDocument,
        _api_editMessageText,
        _api_editMessageReplyMarkup,
        _api_deleteMessage,
        _api_answerCallbackQuery,
        _api_getChat,
        _api_getChatMember,
        _api_createForumTopic,
        _api_sendChatAction,
        _api_getFile,
        _api_close,
        _api_logOut,
        *(_true_only(name) for name in sorted(_TRUE_ONLY_METHODS)),
    )
}
