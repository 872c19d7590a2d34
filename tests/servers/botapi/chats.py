"""Test-side chat setup: declare chats and forums, block the bot, set members' statuses."""

from __future__ import annotations

from typing import Any

from tests.servers.botapi.state import MEMBER_STATUSES, StandInState


class ChatSetup(StandInState):
    """What a chat is before the bot looks at it (getChat, getChatMember, sends to it)."""

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
