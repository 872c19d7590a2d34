"""core.credentials.qr_fast: the activation QR code is byte for byte the PNG qrcode itself makes, only faster."""

from __future__ import annotations

import io
import random
import string

import pytest
import qrcode
from qrcode.constants import ERROR_CORRECT_H, ERROR_CORRECT_L, ERROR_CORRECT_M, ERROR_CORRECT_Q

from core.credentials import qr_fast
from core.credentials.issuer import qr_png


def _qrcode_png(payload: str, error_correction: int, box_size: int = 8, border: int = 4) -> bytes:
    code = qrcode.QRCode(error_correction=error_correction, box_size=box_size, border=border)
    code.add_data(payload)
    code.make(fit=True)
    buffer = io.BytesIO()
    code.make_image().save(buffer, format="PNG")
    return buffer.getvalue()


def _payloads(count: int) -> list[str]:
    rnd = random.Random(17)
    alphabet = string.ascii_letters + string.digits + ":-_"
    # Lengths across versions 1 to 10 or so, the activation payload's (~75) among them.
    return ["".join(rnd.choice(alphabet) for _ in range(rnd.choice([1, 9, 30, 74, 75, 76, 140, 200])))
            for _ in range(count)]


@pytest.mark.parametrize("error_correction", [ERROR_CORRECT_L, ERROR_CORRECT_M, ERROR_CORRECT_Q, ERROR_CORRECT_H])
def test_same_png_as_qrcode(error_correction: int) -> None:
    for payload in _payloads(30):
        assert qr_fast.qr_png(payload, error_correction=error_correction, box_size=8, border=4) \
            == _qrcode_png(payload, error_correction), payload


def test_same_png_for_other_sizes_and_versions_with_a_version_block() -> None:
    # Version 7 and up carry version information: placed by qrcode, not masked.
    long = "".join(random.Random(3).choice(string.ascii_uppercase) for _ in range(300))
    assert qr_fast.qr_png(long, error_correction=ERROR_CORRECT_M, box_size=3, border=2) \
        == _qrcode_png(long, ERROR_CORRECT_M, box_size=3, border=2)


def test_best_mask_is_qrcode_choice_for_every_mask() -> None:
    """Every mask gets chosen for some payload, and always the one qrcode chooses."""
    chosen = set()
    for payload in _payloads(120):
        code = qrcode.QRCode(error_correction=ERROR_CORRECT_M)
        code.add_data(payload)
        code.best_fit()
        expected = code.best_mask_pattern()
        assert qr_fast._best_mask(code) == expected, payload
        chosen.add(expected)
    assert chosen == set(range(8))


def test_issuer_uses_it() -> None:
    payload = "MLEG1:" + "A" * 22 + ":" + "b" * 43
    assert qr_png(payload) == _qrcode_png(payload, ERROR_CORRECT_M)
