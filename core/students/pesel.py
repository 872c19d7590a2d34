"""PESEL (the Polish national identification number): validation with a reason, and masking.

The checksum and date rules are python-stdnum's; we only translate its errors into
reasons a student can act on.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from stdnum.exceptions import InvalidChecksum, InvalidComponent, InvalidFormat, InvalidLength
from stdnum.exceptions import ValidationError as StdnumValidationError
from stdnum.pl import pesel as stdnum_pesel

__all__ = ["PeselProblem", "birth_date", "check_pesel", "mask_pesel", "normalize_pesel"]


class PeselProblem(StrEnum):
    LENGTH = "pesel_length"
    DIGITS = "pesel_digits"
    CHECKSUM = "pesel_checksum"
    DATE = "pesel_date"


def normalize_pesel(raw: str) -> str:
    """Strip the spaces and dashes people type inside numbers."""
    return "".join(ch for ch in raw if ch not in " -\t")


def check_pesel(raw: str) -> tuple[str | None, PeselProblem | None]:
    """Return (normalized PESEL, None) when valid, else (None, the first problem found)."""
    number = normalize_pesel(raw)
    if not number.isascii() or not number.isdigit():
        return None, PeselProblem.DIGITS
    if len(number) != 11:
        return None, PeselProblem.LENGTH
    try:
        stdnum_pesel.validate(number)
    except InvalidChecksum:
        return None, PeselProblem.CHECKSUM
    except InvalidComponent:
        return None, PeselProblem.DATE
    except InvalidLength:
        return None, PeselProblem.LENGTH
    except InvalidFormat:
        return None, PeselProblem.DIGITS
    except StdnumValidationError:
        return None, PeselProblem.CHECKSUM
    return number, None


def birth_date(number: str) -> date:
    """Birth date carried by a valid PESEL (the month encodes the century)."""
    return stdnum_pesel.get_birth_date(number)


def mask_pesel(number: str) -> str:
    """At most the first two and last two digits are ever shown: `44*******59`."""
    if len(number) < 4:
        return "*" * len(number)
    return number[:2] + "*" * (len(number) - 4) + number[-2:]
