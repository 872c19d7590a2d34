"""Telegram updates to the engine's channel-neutral events: the whole translation, in one place.

- a text message -> "text", or "command" when it starts with a /command;
- a button press (callback_query) -> "button" with the button's callback_data;
- anything else a student can send (sticker, photo even with a caption, voice, file...) ->
  "unsupported": the engine asks for text, so a PESEL in a photo caption is never read.
The event id is the update id, so an update delivered twice is handled once; the account
is the private chat's id, which is also where the replies go.
"""

from __future__ import annotations

from telegram import Update

from core.conversation import Event

__all__ = ["CHANNEL", "account_of", "event_from_update", "language_hint"]

CHANNEL = "telegram"


def event_id(update: Update) -> str:
    return f"tg:{update.update_id}"


def language_hint(update: Update) -> str | None:
    """Telegram's `language_code` ("pl", "en-GB"...) reduced to a language the catalogs have."""
    user = update.effective_user
    code = (user.language_code or "").lower() if user else ""
    base = code.split("-", 1)[0]
    return base if base in ("pl", "en") else None


def account_of(update: Update) -> str | None:
    chat = update.effective_chat
    return str(chat.id) if chat is not None else None


def event_from_update(update: Update) -> Event | None:
    """The event for a student's update in a private chat; None for what is not a student's act."""
    account = account_of(update)
    if account is None:
        return None
    eid, hint = event_id(update), language_hint(update)
    query = update.callback_query
    if query is not None:
        return Event(kind="button", channel=CHANNEL, account_id=account, text=query.data or "", event_id=eid,
                     language_hint=hint)
    message = update.message
    if message is None:
        return None  # edits, reactions, member changes: not a new request from the student
    if message.text is not None:
        return Event.text_message(CHANNEL, account, message.text, event_id=eid, language_hint=hint)
    return Event(kind="unsupported", channel=CHANNEL, account_id=account, event_id=eid, language_hint=hint)
