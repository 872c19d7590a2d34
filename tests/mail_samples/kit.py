"""Helpers shared by the mail tests: a context wired to the loopback servers, samples, MIME walking."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import default
from pathlib import Path
from typing import Any

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.storage.db import make_engine
from tests.factories import build_ctx, make_settings

SAMPLES = Path(__file__).resolve().parent


def sample(name: str, **replace: str) -> bytes:
    """A sample .eml with `{placeholders}` filled (addresses differ per test)."""
    raw = (SAMPLES / name).read_bytes()
    for key, value in replace.items():
        raw = raw.replace(("{" + key + "}").encode(), value.encode())
    # Samples are stored with LF; mail on the wire has CRLF.
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def mail_ctx(tmp_path: Path, db_url: str, clock: FixedClock, **overrides: Any) -> AppContext:
    settings = make_settings(tmp_path, database_url=db_url, **overrides)
    return build_ctx(settings, make_engine(db_url), clock)


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def part_types(message: Message, depth: int = 0) -> list[str]:
    """The MIME tree as indented content types, to compare shapes in one assert."""
    lines = ["  " * depth + message.get_content_type()]
    if message.is_multipart():
        for part in message.get_payload():  # type: ignore[union-attr]
            assert isinstance(part, Message)
            lines += part_types(part, depth + 1)
    return lines
