"""The product's error hierarchy; front-ends turn these into friendly words.

    MlegError
     ├── ConfigurationError        a setting is missing or unsafe
     ├── RegisterImportError       a register file refused as a whole (lists every bad line)
     ├── NotFoundError             a student, credential or thread that does not exist
     ├── TransitionError           a credential move the lifecycle does not allow
     ├── EligibilityError          the student may not have a credential (carries the reasons)
     ├── RateLimitedError          too many guesses; carries when the lock lifts
     └── ActivationError           a wrong, used or expired activation code
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = [
    "ActivationError",
    "ConfigurationError",
    "EligibilityError",
    "MlegError",
    "NotFoundError",
    "RateLimitedError",
    "RegisterImportError",
    "TransitionError",
]


class MlegError(Exception):
    """Base of every error the product raises on purpose."""


class ConfigurationError(MlegError):
    """A setting is missing, malformed or unsafe for this mode."""


class RegisterImportError(MlegError, ValueError):
    """The register file was refused; `problems` lists (line number, reason) pairs."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  line {n}: {reason}" for n, reason in problems[:200])
        more = f"\n  ... and {len(problems) - 200} more" if len(problems) > 200 else ""
        super().__init__(
            f"register file refused, nothing was changed ({len(problems)} problem(s)):\n"
            f"{lines}{more}"
        )


class NotFoundError(MlegError, LookupError):
    """The thing asked for does not exist."""


class TransitionError(MlegError):
    """The credential lifecycle does not allow this move."""


class EligibilityError(MlegError):
    """The student may not have a credential now."""

    def __init__(self, reasons: list[Any]) -> None:
        self.reasons = reasons
        super().__init__("not eligible: " + ", ".join(str(r) for r in reasons))


class RateLimitedError(MlegError):
    """Too many wrong guesses; `until` is when the lock lifts."""

    def __init__(self, until: datetime) -> None:
        self.until = until
        super().__init__(f"too many attempts, locked until {until.isoformat()}")


class ActivationError(MlegError):
    """The activation code is wrong, already used, or past its window."""


class ConflictError(MlegError):
    """The request clashes with what exists (a second live credential, a closed thread)."""


__all__ += ["ConflictError"]
