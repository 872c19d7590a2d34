"""A channel-neutral outgoing message, as the outbox stores it (encrypted) and senders read it."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Attachment", "Button", "OutgoingMessage"]


@dataclass(frozen=True)
class Button:
    label: str
    data: str


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes
    inline_cid: str | None = None  # also shown inline (HTML e-mail) under this Content-ID


@dataclass
class OutgoingMessage:
    """What to say; each sender decides how (MIME for e-mail, sendMessage/sendPhoto for chat)."""

    text: str
    subject: str | None = None
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    buttons: list[list[Button]] = field(default_factory=list)
    # RFC 3834: "auto-replied" on automatic answers, "auto-generated" on notices.
    auto_submitted: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    message_id: str | None = None

    def to_json(self) -> bytes:
        data = asdict(self)
        for attachment in data["attachments"]:
            attachment["content"] = base64.b64encode(attachment["content"]).decode()
        return json.dumps(data, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> OutgoingMessage:
        data: dict[str, Any] = json.loads(raw)
        data["attachments"] = [
            Attachment(**{**a, "content": base64.b64decode(a["content"])})
            for a in data.get("attachments", [])
        ]
        data["buttons"] = [[Button(**b) for b in row] for row in data.get("buttons", [])]
        return cls(**data)
