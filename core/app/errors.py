"""The product's error hierarchy; front-ends turn these into friendly words.

    MlegError
     ├── ConfigurationError        a setting is missing or unsafe
     ├── RegisterImportError       a register file refused as a whole (lists every bad line)
     ├── MassRemovalError          a sync refused: it would mark too many students removed
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
    "MassRemovalError",
    "MlegError",
    "NotFoundError",
    "RateLimitedError",
    "RegisterImportError",
    "TransitionError",
    "UnreachableError",
]


class MlegError(Exception):
    """Base of every error the product raises on purpose."""


class ConfigurationError(MlegError):
    """A setting is missing, malformed or unsafe for this mode."""


class UnreachableError(MlegError):
    """A server the product needs at start (the Telegram Bot API) cannot be reached or refuses us."""


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


class MassRemovalError(MlegError):
    """A sync refused before any change: the file is empty or would remove too many students.

    Removal leads to revocation, so a cut-off export must not revoke the university;
    `would_remove` and `active` let a front-end say how far off the file is.
    """

    def __init__(self, reason: str, *, would_remove: int, active: int) -> None:
        self.reason = reason
        self.would_remove = would_remove
        self.active = active
        super().__init__(f"register sync refused, nothing was changed: {reason}")


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
