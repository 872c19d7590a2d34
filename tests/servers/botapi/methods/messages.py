"""Sending and changing text messages: sendMessage, the edits, deleteMessage, callback answers.

The checks every send makes (the bot not blocked, the topic there, the message replied to
there, flood control) and the recording of what was sent are here too; files.py uses them.
"""

from __future__ import annotations

import time
from typing import Any

from tests.servers.botapi.errors import ApiError
from tests.servers.botapi.flood import check_rate
from tests.servers.botapi.records import SentMessage
from tests.servers.botapi.state import StandInState, strip_reply
from tests.servers.botapi.text import MAX_TEXT_LENGTH, checked_text
from tests.servers.botapi.wire import Files, Params, as_bool


def check_send_allowed(s: StandInState, chat: dict[str, Any]) -> None:
    """403 for a chat that blocked the bot (or a group that removed it)."""
    chat_id = chat["id"]
    if chat_id in s._blocked:
        if chat["type"] == "private":
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        raise ApiError(403, "Forbidden: bot was kicked from the supergroup chat")


def check_thread(s: StandInState, chat: dict[str, Any], thread_id: int | None) -> None:
    """400 for a forum topic that does not exist; outside forums Telegram ignores the id."""
    if thread_id is None or not chat.get("is_forum"):
        return
    if thread_id not in s._topics.get(chat["id"], {}):
        raise ApiError(400, "Bad Request: message thread not found")


def reply_target(
    s: StandInState, chat: dict[str, Any], params: dict[str, Any]
) -> tuple[int | None, dict[str, Any] | None]:
    """(the id replied to, that message) from either way of asking; 400 if it is not there."""
    reply = params.get("reply_parameters")
    reply_id: int | None = params.get("reply_to_message_id")
    allow_missing = as_bool(params.get("allow_sending_without_reply"))
    if isinstance(reply, dict):
        reply_id = int(reply["message_id"]) if "message_id" in reply else None
        allow_missing = as_bool(reply.get("allow_sending_without_reply", allow_missing))
    if reply_id is None:
        return None, None
    original = s._messages.get((chat["id"], reply_id))
    if original is None and not allow_missing:
        raise ApiError(400, "Bad Request: message to be replied not found")
    return reply_id, original


def store_bot_message(
    s: StandInState,
    token: str,
    chat: dict[str, Any],
    params: dict[str, Any],
    method: str,
    text: str | None,
    plain: str | None,
    extra: dict[str, Any],
    record: dict[str, Any],
) -> dict[str, Any]:
    """Keep a message the bot sent, as Telegram's Message and as a ``SentMessage`` record."""
    thread_id = params.get("message_thread_id")
    reply_id, original = reply_target(s, chat, params)
    message_id = s._alloc_message_id(chat["id"])
    message = s._message_header(chat, message_id, s.bot_user(token))
    if thread_id is not None and chat.get("is_forum"):
        message["message_thread_id"] = thread_id
        message["is_topic_message"] = True
    if original is not None:
        message["reply_to_message"] = strip_reply(original)
    if method == "sendMessage":
        message["text"] = plain
    elif plain:
        message["caption"] = plain
    message.update(extra)
    markup = params.get("reply_markup")
    if isinstance(markup, dict) and "inline_keyboard" in markup:
        message["reply_markup"] = markup
    s._messages[(chat["id"], message_id)] = message
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
    s._sent.append(sent)
    s._sent_index[(chat["id"], message_id)] = sent
    return message


def _api_sendMessage(s: StandInState, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        chat = s._chat_for(p.get("chat_id"))
        check_send_allowed(s, chat)
        text = p.get("text")
        if text is None or str(text).strip() == "":
            raise ApiError(400, "Bad Request: message text is empty")
        plain = checked_text(s, text, p.get("parse_mode"), MAX_TEXT_LENGTH, "message")
        if not plain.strip():
            raise ApiError(400, "Bad Request: text must be non-empty")
        check_thread(s, chat, p.get("message_thread_id"))
        reply_target(s, chat, p)
        check_rate(s, chat)
        message = store_bot_message(s, token, chat, p, "sendMessage", str(text), plain, {}, {})
        s._cond.notify_all()
        return message


def _edit_target(s: StandInState, p: Params, token: str) -> tuple[dict[str, Any], SentMessage]:
    if p.get("inline_message_id"):
        raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
    chat = s._chat_for(p.get("chat_id"))
    message_id = p.get("message_id")
    if not isinstance(message_id, int):
        raise ApiError(400, "Bad Request: message identifier is not specified")
    message = s._messages.get((chat["id"], message_id))
    if message is None:
        raise ApiError(400, "Bad Request: message to edit not found")
    sent = s._sent_index.get((chat["id"], message_id))
    if sent is None or not message.get("from", {}).get("is_bot"):
        raise ApiError(400, "Bad Request: message can't be edited")
    return message, sent


_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)


def _record_edit(message: dict[str, Any], sent: SentMessage, new_markup: dict[str, Any] | None) -> None:
    """Stamp the edit, set (or drop) the keyboard, and keep the record's previous version."""
    message["edit_date"] = int(time.time())
    if new_markup is None:
        message.pop("reply_markup", None)
    else:
        message["reply_markup"] = new_markup
    sent.edits.append({"text": sent.text, "reply_markup": sent.reply_markup})


def _api_editMessageText(s: StandInState, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        message, sent = _edit_target(s, p, token)
        text = p.get("text")
        if text is None or str(text).strip() == "":
            raise ApiError(400, "Bad Request: message text is empty")
        if "text" not in message:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        plain = checked_text(s, text, p.get("parse_mode"), MAX_TEXT_LENGTH, "message")
        markup = p.get("reply_markup")
        new_markup = markup if isinstance(markup, dict) and "inline_keyboard" in markup else None
        if plain == message.get("text") and new_markup == message.get("reply_markup"):
            raise ApiError(400, _NOT_MODIFIED)
        message["text"] = plain
        _record_edit(message, sent, new_markup)
        sent.text, sent.plain_text = str(text), plain
        sent.parse_mode = p.get("parse_mode") or None
        sent.reply_markup = markup if isinstance(markup, dict) else None
        s._cond.notify_all()
        return dict(message)


def _api_editMessageReplyMarkup(s: StandInState, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        message, sent = _edit_target(s, p, token)
        markup = p.get("reply_markup")
        new_markup = markup if isinstance(markup, dict) and markup.get("inline_keyboard") else None
        if new_markup == message.get("reply_markup"):
            raise ApiError(400, _NOT_MODIFIED)
        _record_edit(message, sent, new_markup)
        sent.reply_markup = new_markup
        s._cond.notify_all()
        return dict(message)


def _api_deleteMessage(s: StandInState, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        chat = s._chat_for(p.get("chat_id"))
        message_id = p.get("message_id")
        if not isinstance(message_id, int) or (chat["id"], message_id) not in s._messages:
            raise ApiError(400, "Bad Request: message to delete not found")
        del s._messages[(chat["id"], message_id)]
        sent = s._sent_index.get((chat["id"], message_id))
        if sent is not None:
            sent.deleted = True
        return True


def _api_answerCallbackQuery(s: StandInState, p: Params, f: Files, token: str) -> Any:
    query_id = str(p.get("callback_query_id") or "")
    text = p.get("text")
    if text and s.check_lengths and len(str(text)) > 200:
        raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
    with s._cond:
        if query_id not in s._open_callbacks:
            raise ApiError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        s._open_callbacks.discard(query_id)
    return True


METHODS = (
    _api_sendMessage,
    _api_editMessageText,
    _api_editMessageReplyMarkup,
    _api_deleteMessage,
    _api_answerCallbackQuery,
)
