"""What the stand-in's Telegram holds, under one lock: chats, users, messages, updates, records.

``StandInState`` is the base of every part of ``BotApiStandIn``: the test-side parts (chat
setup, update injection, inspection, faults, serving) and the Bot API methods all read and
change these attributes, always while holding ``_cond``. The switches a test may flip at any
time are plain attributes here too.
"""

from __future__ import annotations

import collections
import itertools
import re
import socket
import threading
import time
from collections import deque
from typing import Any

from tests.servers.botapi.errors import ApiError
from tests.servers.botapi.records import ApiCall, SentMessage

DEFAULT_TOKEN = "7000000001:AAH-local_stand-in_token_for_tests"
TOKEN_RE = re.compile(r"^(\d{1,20}):([A-Za-z0-9_-]{1,100})$")
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
SEND_METHODS = frozenset({"sendMessage", "sendPhoto", "sendDocument"})
POLLING_METHODS = frozenset({"getUpdates"})


class StandInState:
    """The stand-in's data and switches, and the bookkeeping every part shares."""

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
        self._delayed: list[dict[str, Any]] = []
        self._send_times: dict[int, deque[float]] = {}
        self._global_send_times: deque[float] = deque()
        self._rate_limited: dict[int | None, int] = {}
        self._answers_lost = 0
        self._full_chat_fields: dict[int, dict[str, Any]] = {}

    # ----------------------------------------------------------------- the bot itself

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
            raise ApiError(400, "Bad Request: chat_id is empty")
        if isinstance(chat_id, str):
            for chat in self._chats.values():
                if chat_id.startswith("@") and chat.get("username") == chat_id[1:]:
                    return chat
            raise ApiError(400, "Bad Request: chat not found")
        chat_id = int(chat_id)
        if chat_id not in self._chats and self.strict_chats:
            raise ApiError(400, "Bad Request: chat not found")
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

    # ----------------------------------------------------------------- the update queue

    def _enqueue(self, payload: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self._update_ids), **payload}
        message = payload.get("message") or payload.get("edited_message") or (
            payload.get("callback_query") or {}).get("message") or {}
        self._update_chats[update["update_id"]] = message.get("chat", {}).get("id")
        self._updates.append(update)
        self._cond.notify_all()
        return update

    def _message_header(self, chat: dict[str, Any], message_id: int, sender: dict[str, Any]) -> dict[str, Any]:
        """The fields every Message object starts with."""
        return {
            "message_id": message_id,
            "from": sender,
            "chat": self._chat_obj(chat),
            "date": int(time.time()),
        }


def strip_reply(message: dict[str, Any]) -> dict[str, Any]:
    """A message as it appears inside another's ``reply_to_message`` (one level deep only)."""
    return {k: v for k, v in message.items() if k != "reply_to_message"}
