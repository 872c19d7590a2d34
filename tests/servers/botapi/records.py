"""What the stand-in records for a test to inspect: uploaded files, answered calls, sent messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
