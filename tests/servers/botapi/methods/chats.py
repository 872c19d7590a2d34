"""Chats and members as the bot sees them: getChat, getChatMember, forum topics, chat actions."""

from __future__ import annotations

from typing import Any

from tests.servers.botapi.errors import ApiError
from tests.servers.botapi.methods.messages import check_send_allowed
from tests.servers.botapi.state import StandInState
from tests.servers.botapi.wire import Files, Params


def _api_getChat(s: StandInState, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        chat_id = p.get("chat_id")
        if isinstance(chat_id, int) and chat_id not in s._chats:
            raise ApiError(400, "Bad Request: chat not found")
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
    """A ChatMember object of ``status``, with the fields PTB requires for that kind."""
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


def _api_getChatMember(s: StandInState, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        chat = s._chat_for(p.get("chat_id"))
        user_id = p.get("user_id")
        if not isinstance(user_id, int):
            raise ApiError(400, "Bad Request: invalid user_id specified")
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


def _api_createForumTopic(s: StandInState, p: Params, f: Files, token: str) -> Any:
    name = str(p.get("name") or "")
    if not 1 <= len(name) <= 128:
        raise ApiError(
            400,
            "Bad Request: TOPIC_TITLE_EMPTY" if not name else "Bad Request: TOPIC_TITLE_INVALID",
        )
    with s._cond:
        chat = s._chat_for(p.get("chat_id"))
        if not chat.get("is_forum"):
            raise ApiError(400, "Bad Request: the chat is not a forum")
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
            **s._message_header(chat, thread_id, s.bot_user(token)),
            "message_thread_id": thread_id,
            "is_topic_message": True,
            "forum_topic_created": {"name": name, "icon_color": topic["icon_color"]},
        }
        return dict(topic)


def _api_sendChatAction(s: StandInState, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        chat = s._chat_for(p.get("chat_id"))
        check_send_allowed(s, chat)
    if not p.get("action"):
        raise ApiError(400, "Bad Request: wrong parameter action in request")
    return True


METHODS = (_api_getChat, _api_getChatMember, _api_createForumTopic, _api_sendChatAction)
