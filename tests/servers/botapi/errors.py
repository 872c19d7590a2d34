"""The two errors of the stand-in: an answer in Telegram's error shape, and a refused ``parse_mode`` text."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer in Telegram's shape; a method raises it and the dispatcher answers it."""

    def __init__(
        self, code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters:
            out["parameters"] = self.parameters
        return out


class EntityParseError(ValueError):
    """A ``parse_mode`` text Telegram would refuse; the message is Telegram's wording."""
