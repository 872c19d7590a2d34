"""Activation data: the port to the national issuer, and the local implementation.

The national system's API (the one behind mObywatel) is not public. The product talks
to it only through `ActivationIssuer`; `LocalIssuer` generates the activation code and
the QR payload itself, keeps only their keyed hashes, and can verify a redemption.
A university that gets API access writes one more class with the same three methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from qrcode.constants import ERROR_CORRECT_M

from core.app.clock import RandomSource
from core.app.errors import ActivationError
from core.credentials import qr_fast
from core.security.secrets_box import SecretBox
from core.storage.models import Credential

__all__ = [
    "CODE_ALPHABET",
    "ActivationData",
    "ActivationIssuer",
    "LocalIssuer",
    "normalize_code",
    "qr_png",
]

# No 0/O, 1/I/L, 8/B, 5/S: a code read off a screen and typed by hand must not be ambiguous.
CODE_ALPHABET = "ACDEFGHJKMNPQRTUVWXYZ234679"
CODE_GROUPS = 3
CODE_GROUP_LENGTH = 4  # 12 symbols of 27: about 57 bits, against 5 guesses an hour
QR_TOKEN_LENGTH = 24


@dataclass(frozen=True)
class ActivationData:
    """Exists in clear only on its way into the activation e-mail."""

    code: str
    qr_payload: str
    deadline: datetime


class ActivationIssuer(Protocol):
    def issue(self, credential: Credential, now: datetime, window: timedelta) -> ActivationData:
        """Create activation data for `credential`, store its hashes on it, return it in clear."""

    def redeem(self, credential: Credential, code: str, now: datetime) -> None:
        """Check a typed code; raise ActivationError when wrong, used or out of its window."""

    def invalidate(self, credential: Credential) -> None:
        """Make the credential's activation data unusable (revocation, expiry)."""


def normalize_code(raw: str) -> str:
    return "".join(ch for ch in raw.upper() if ch.isalnum())


def _group(code: str) -> str:
    return "-".join(
        code[i : i + CODE_GROUP_LENGTH] for i in range(0, len(code), CODE_GROUP_LENGTH)
    )


class LocalIssuer:
    """Issues activation data in this process; nothing clear is stored."""

    def __init__(self, box: SecretBox, random: RandomSource) -> None:
        self._box = box
        self._random = random

    def issue(self, credential: Credential, now: datetime, window: timedelta) -> ActivationData:
        code = self._random.string(CODE_ALPHABET, CODE_GROUPS * CODE_GROUP_LENGTH)
        token = self._random.string(CODE_ALPHABET, QR_TOKEN_LENGTH)
        credential.code_hash = self._box.keyed_hash("activation-code", code)
        credential.qr_token_hash = self._box.keyed_hash("activation-qr", token)
        credential.activation_deadline = now + window
        payload = f"MLEG1:{credential.public_id}:{token}"
        return ActivationData(_group(code), payload, credential.activation_deadline)

    def redeem(self, credential: Credential, code: str, now: datetime) -> None:
        if credential.code_hash is None:
            raise ActivationError("activation data already used or withdrawn")
        if credential.activation_deadline is None or now > credential.activation_deadline:
            raise ActivationError("activation window has passed")
        if not self._box.verify("activation-code", normalize_code(code), credential.code_hash):
            raise ActivationError("wrong activation code")
        self.invalidate(credential)  # single use

    def invalidate(self, credential: Credential) -> None:
        credential.code_hash = None
        credential.qr_token_hash = None


def qr_png(payload: str, box_size: int = 8) -> bytes:
    """The QR code a student scans in mObywatel, as PNG bytes (qrcode's own output, made faster:
    core.credentials.qr_fast)."""
    return qr_fast.qr_png(payload, error_correction=ERROR_CORRECT_M, box_size=box_size, border=4)
