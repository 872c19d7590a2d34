"""The log filter masks a PESEL-shaped number, and leaves the digit runs inside longer tokens alone."""

from __future__ import annotations

import logging

import pytest

from core.app.logging_setup import RedactingFilter


def _filtered(message: str) -> str:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)
    RedactingFilter().filter(record)
    return record.getMessage()


@pytest.mark.parametrize("message,expected", [
    ("student 04250633362 asked", "student 04*******62 asked"),
    ("pesel=04250633362,", "pesel=04*******62,"),
    ("(04250633362)", "(04*******62)"),
    # A Maildir file name / Message-ID: its digit run is part of a hex token, not a PESEL.
    ("written to new/mleg-753a449f60318944339bf10906385b3f.mleg",
     "written to new/mleg-753a449f60318944339bf10906385b3f.mleg"),
    ("<bench-12-04250633362abc@example.org>", "<bench-12-04250633362abc@example.org>"),
    ("12 digits 042506333621 are no PESEL", "12 digits 042506333621 are no PESEL"),
    # As a student types them (quoted in an error, say): separated, or an activation code.
    ("typed 042506 33362 here", "typed 04*******62 here"),
    ("typed 042-506-333-62 here", "typed 04*******62 here"),
    ("kod kmnp-qrtx-wzac", "kod ****-****-****"),
])
def test_pesel_shaped_numbers_masked_tokens_kept(message: str, expected: str) -> None:
    assert _filtered(message) == expected
