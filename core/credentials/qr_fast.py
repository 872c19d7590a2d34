"""The activation QR code as PNG, byte for byte what `qrcode` makes, in a tenth of its time.

`qrcode` picks the mask by building the symbol eight times and scoring each in pure
Python (about 20 ms), then draws the PNG module by module (about 4 ms). That ran inside
the chat turn that applies for a credential, holding SQLite's write lock and the
interpreter (bench.chat_throughput). Here the symbol is built once with mask 0; the other
seven differ from it only on the data modules (in `qrcode`'s scoring pass the format bits
are all light whatever the mask), so each is one XOR, scored with numpy by the same
rules `qrcode.util.lost_point` applies. The first mask with the lowest score wins, as in
`qrcode`, and the PNG is the same 1-bit image scaled up; tests/test_qr_fast.py holds the
output to `qrcode`'s own.
"""

from __future__ import annotations

import io
from functools import cache

import numpy as np
import qrcode
from numpy.typing import NDArray
from PIL import Image
from qrcode import util
from qrcode.main import copy_2d_array, precomputed_qr_blanks

__all__ = ["qr_png"]

Matrix = NDArray[np.bool_]
# The 1:1:3:1:1 finder-like run with four light modules after or before it (qrcode's level 3),
# as 11-bit numbers, the first module the highest bit.
_FINDER_LIKE = (0b10111010000, 0b00001011101)


@cache
def _masks(size: int) -> tuple[Matrix, ...]:
    """The eight mask patterns over a size x size symbol (row i, column j, as qrcode.util.mask_func)."""
    i, j = np.indices((size, size))
    return tuple(np.array([[bool(util.mask_func(p)(int(r), int(c))) for r, c in zip(ri, ci, strict=True)]
                           for ri, ci in zip(i, j, strict=True)], dtype=bool) for p in range(8))


def _data_modules(code: qrcode.QRCode) -> Matrix:  # type: ignore[type-arg]
    """Where the data bits go: what is still empty once the function patterns and format bits are placed."""
    version = code.version
    if version not in precomputed_qr_blanks:
        code.makeImpl(True, 0)  # fills the cache of blanks
    code.modules = copy_2d_array(precomputed_qr_blanks[version])
    code.setup_type_info(True, 0)
    if version >= 7:
        code.setup_type_number(True)
    return np.array([[module is None for module in row] for row in code.modules], dtype=bool)


def _runs_penalty(lines: NDArray[np.int8]) -> NDArray[np.int64]:
    """Level 1, per symbol: every run of five or more same-coloured modules in a row or column
    scores its length - 2. `lines`: (symbols, lines, modules)."""
    symbols = len(lines)
    # A sentinel (2) at both ends of every line: a run never crosses into the next line.
    padded = np.pad(lines, ((0, 0), (0, 0), (1, 1)), constant_values=2).reshape(symbols, -1)
    points = np.zeros(symbols, dtype=np.int64)
    for index, flat in enumerate(padded):
        lengths = np.diff(np.flatnonzero(flat[1:] != flat[:-1]))  # the sentinels' own runs: 1 or 2 long
        points[index] = (lengths[lengths >= 5] - 2).sum()
    return points


def _lost_points(symbols: Matrix) -> NDArray[np.int64]:
    """qrcode.util.lost_point of each of `symbols` (symbols, size, size), vectorised; its loops
    skip only comparisons that cannot match, so a full count gives the same number."""
    size = symbols.shape[1]
    lines = np.concatenate((symbols, symbols.transpose(0, 2, 1)), axis=1).astype(np.int8)
    points = _runs_penalty(lines)
    corner = symbols[:, :-1, :-1]
    same = (corner == symbols[:, :-1, 1:]) & (corner == symbols[:, 1:, :-1]) & (corner == symbols[:, 1:, 1:])
    points += 3 * same.sum(axis=(1, 2))
    width = size - 10
    windows = np.zeros((*lines.shape[:2], width), dtype=np.int32)
    for offset in range(11):  # each run of 11 modules as a number
        windows = (windows << 1) | lines[:, :, offset:offset + width]
    points += 40 * np.isin(windows, _FINDER_LIKE).sum(axis=(1, 2))
    for index, dark in enumerate(symbols.sum(axis=(1, 2))):
        percent = float(int(dark)) / (size**2)  # the same float steps as qrcode's level 4
        points[index] += int(abs(percent * 100 - 50) / 5) * 10
    return points


def _best_mask(code: qrcode.QRCode) -> int:  # type: ignore[type-arg]
    """qrcode's QRCode.best_mask_pattern: the first of the eight masks with the lowest lost point."""
    code.makeImpl(True, 0)
    first = np.array(code.modules, dtype=bool)
    data = _data_modules(code)
    masks = np.stack(_masks(len(first)))
    return int(np.argmin(_lost_points(first ^ (data & (masks[0] ^ masks)))))


def qr_png(payload: str, *, error_correction: int, box_size: int, border: int) -> bytes:
    """The PNG `qrcode.QRCode(...).make_image().save(format="PNG")` writes for `payload`."""
    code = qrcode.QRCode(error_correction=error_correction, box_size=box_size, border=border)
    code.add_data(payload)
    code.best_fit(start=code.version)
    code.makeImpl(False, _best_mask(code))
    dark = np.pad(np.array(code.modules, dtype=bool), border, constant_values=False)
    # Mode "1" as qrcode's PIL image: 0 black, 255 white; scaled by repeating each module.
    pixels = np.where(dark, 0, 255).astype(np.uint8).repeat(box_size, axis=0).repeat(box_size, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").convert("1", dither=Image.Dither.NONE).save(buffer, format="PNG")
    return buffer.getvalue()
