"""Test-side update injection: what users do, queued as updates the bot receives.

Each ``push_*`` queues one update (a text, a command, a sticker, a button press) as Telegram
would build it, in the chat and from the user given; the bot gets it by getUpdates or, when
a webhook is set, by a POST to it.
"""

from __future__ import annotations

import time
from typing import Any, TypedDict, Unpack

from tests.servers.botapi.state import StandInState, strip_reply


class MessageOptions(TypedDict, total=False):
    """The rest of ``push_message``'s say over a pushed message: the chat's title, more about
    the sender, the forum topic, the message replied to. Unset, ``push_message``'s defaults
    apply (language "pl", the rest none)."""

    chat_title: str | None
    last_name: str | None
    username: str | None
    language_code: str | None
    message_thread_id: int | None
    reply_to_message_id: int | None


class UpdateInjection(StandInState):
    """Queue updates from users; each returns the update as queued (with its ``update_id``)."""

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
            message = self._message_header(chat, self._alloc_message_id(chat_id), user)
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
                    strip_reply(original)
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
        **options: Unpack[MessageOptions],
    ) -> dict[str, Any]:
        """Queue a plain text message from ``user_id`` in ``chat_id``."""
        return self.push_message(
            chat_id, user_id, text=text, chat_type=chat_type, first_name=first_name, **options
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
        **options: Unpack[MessageOptions],
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
            **options,
        )

    def push_group_text(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        chat_type: str = "supergroup",
        first_name: str = "Anna",
        **options: Unpack[MessageOptions],
    ) -> dict[str, Any]:
        """Queue a text from ``user_id`` in a group/supergroup (e.g. the staff chat)."""
        return self.push_text(chat_id, user_id, text, chat_type=chat_type, first_name=first_name, **options)

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
            message = self._messages.get((chat_id, message_id)) or self._message_header(
                chat, message_id, self.bot_user()
            )
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
