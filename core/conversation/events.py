"""Channel-neutral input to the conversation engine, and its output."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from core.security.control_chars import strip_controls

__all__ = ["MESSAGE_TEXT_LIMIT", "Event", "Reply", "ReplyButton", "coalesce_replies"]

EventKind = Literal["text", "button", "command", "unsupported"]


@dataclass(frozen=True)
class Event:
    """One thing a student did: typed text, pressed a button, sent a command, or something we cannot read.

    `event_id` is the channel's id for it (Telegram's update_id); a redelivered event with an
    id already handled is answered from nothing and changes nothing.
    """

    kind: EventKind
    channel: str
    account_id: str
    text: str = ""
    event_id: str | None = None
    language_hint: str | None = None  # e.g. Telegram's language_code, used before a choice is made

    def __post_init__(self) -> None:
        # Every channel's input passes here: no ESC sequence reaches the state, a thread or a terminal.
        object.__setattr__(self, "text", strip_controls(self.text))

    @classmethod
    def text_message(cls, channel: str, account_id: str, text: str, **kw: str | None) -> Event:
        stripped = text.strip()
        kind: EventKind = "command" if stripped[:1] == "/" and stripped[1:2].isalpha() else "text"
        return cls(kind=kind, channel=channel, account_id=account_id, text=stripped if kind == "command" else text,
                   event_id=kw.get("event_id"), language_hint=kw.get("language_hint"))

    @property
    def command(self) -> str:
        """`/status@mleg_bot now` -> `status`."""
        if self.kind != "command":
            return ""
        head = self.text.lstrip("/").split(maxsplit=1)[0] if self.text.strip("/ ") else ""
        return head.split("@", 1)[0].lower()


@dataclass(frozen=True)
class ReplyButton:
    label: str
    data: str


@dataclass
class Reply:
    """One message back to the student: text, optional buttons (rows), optional image."""

    text: str
    buttons: list[list[ReplyButton]] = field(default_factory=list)
    image_png: bytes | None = None


# The shortest text limit of the chat channels (Telegram's, in characters).
MESSAGE_TEXT_LIMIT = 4096


def coalesce_replies(replies: list[Reply], limit: int = MESSAGE_TEXT_LIMIT) -> list[Reply]:
    """A turn's replies as few chat messages as they fit in, in order.

    A text without buttons or image is joined to the text after it ("Terms accepted." and
    "Your PESEL, please" arrive as one message): one notification for the student instead
    of two, and half the messages against Telegram's 30 per second at the start of term.
    """
    merged: list[Reply] = []
    for reply in replies:
        last = merged[-1] if merged else None
        if (last is not None and not last.buttons and last.image_png is None and reply.image_png is None
                and len(last.text) + 2 + len(reply.text) <= limit):
            merged[-1] = replace(reply, text=f"{last.text}\n\n{reply.text}")
        else:
            merged.append(reply)
    return merged
