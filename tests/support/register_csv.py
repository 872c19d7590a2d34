"""Register CSV files built line by line, parsed, and the problems a refused file lists."""

from __future__ import annotations

from datetime import date

import pytest

from core.app.context import AppContext
from core.app.errors import RegisterImportError
from core.students.demo_register import make_pesel
from core.students.register_csv import HEADER, RegisterRow, parse_register
from tests.factories import UNIVERSITY_DOMAIN

D = UNIVERSITY_DOMAIN
P1 = make_pesel(date(2003, 5, 7), 123, True)  # born in the 2000s: starts with 0
P2 = make_pesel(date(1999, 12, 1), 456, False)
P3 = make_pesel(date(2004, 1, 30), 789, True)


def csv_line(album: str, pesel: str, first: str, last: str, email: str, level: str = "first_cycle",
             status: str = "active", els: str = "", els_until: str = "", removed_on: str = "") -> str:
    """One register line, its columns in the order of core.students.register.HEADER."""
    return ",".join([album, pesel, first, last, email, level, status, els, els_until, removed_on])


def csv_file(*lines: str) -> bytes:
    """The header and `lines`, as the dean's office exports them."""
    return ("\n".join([",".join(HEADER), *lines]) + "\n").encode()


def parse_rows(ctx: AppContext, data: bytes) -> list[RegisterRow]:
    return parse_register(data, box=ctx.box, email_domains=ctx.settings.university.email_domains)


def refusal_problems(ctx: AppContext, data: bytes) -> list[tuple[int, str]]:
    """The (line, problem) pairs of a file the parser refuses whole."""
    with pytest.raises(RegisterImportError) as caught:
        parse_rows(ctx, data)
    return caught.value.problems
