"""Keyed hashes for lookups and authenticated encryption for message bodies.

Both keys are derived from MLEG_SECRET_KEY with HKDF and a purpose label, so one secret
serves every use without one use revealing another's key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import cached_property

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["InvalidToken", "SecretBox", "mask_email"]


class SecretBox:
    """Everything the product does with the instance secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _derive(self, purpose: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
            self._secret
        )

    @cached_property
    def _hash_key(self) -> bytes:
        return self._derive(b"mleg/lookup-hash/v1")

    @cached_property
    def _fernet(self) -> Fernet:
        return Fernet(base64.urlsafe_b64encode(self._derive(b"mleg/outbox-body/v1")))

    def keyed_hash(self, kind: str, value: str) -> str:
        """HMAC-SHA256 of `kind:value`; `kind` keeps a PESEL and a code with equal digits apart."""
        message = f"{kind}:{value}".encode()
        return hmac.new(self._hash_key, message, hashlib.sha256).hexdigest()

    def pesel_hash(self, pesel: str) -> str:
        return self.keyed_hash("pesel", pesel)

    def verify(self, kind: str, value: str, expected_hash: str) -> bool:
        return hmac.compare_digest(self.keyed_hash(kind, value), expected_hash)

    def encrypt(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        return self._fernet.decrypt(token)


def mask_email(address: str) -> str:
    """`jan.kowalski@student.uni.pl` -> `j***@student.uni.pl`: enough to recognise, not to harvest."""
    local, _, domain = address.partition("@")
    if not domain:
        return "***"
    return f"{local[:1]}***@{domain}"
