"""A wrong header is explained by column names, never by quoting the first line (it may be a student row)."""

from __future__ import annotations

import pytest

from core.app.errors import RegisterImportError
from core.security.secrets_box import SecretBox
from core.students.demo_register import generate_rows, rows_to_csv
from core.students.register_csv import HEADER, parse_register
from tests.factories import TEST_SECRET, UNIVERSITY_DOMAIN


def _problem(data: bytes) -> str:
    with pytest.raises(RegisterImportError) as caught:
        parse_register(data, box=SecretBox(TEST_SECRET.encode()), email_domains=[UNIVERSITY_DOMAIN])
    [(line, message)] = caught.value.problems
    assert line == 1 and message.startswith("header must be exactly: " + ",".join(HEADER))
    return message


def _rows(n: int = 3) -> list[dict[str, str]]:
    return [r for r in generate_rows(12) if r["pesel"]][:n]


def test_file_without_header_says_so_and_shows_no_pesel() -> None:
    rows = _rows()
    data = rows_to_csv(rows).split("\n", 1)[1].encode()
    message = _problem(data)
    assert "no header" in message
    for row in rows:
        assert row["pesel"] not in message and row["last_name"] not in message and row["album"] not in message
    assert str(RegisterImportError([(1, message)])).count(rows[0]["pesel"]) == 0


def test_semicolon_separated_file_is_named() -> None:
    rows = _rows()
    message = _problem(rows_to_csv(rows).replace(",", ";").encode())
    assert "semicolon-separated" in message
    assert rows[0]["pesel"] not in message


def test_semicolon_separated_file_without_header_shows_no_pesel() -> None:
    rows = _rows()
    message = _problem(rows_to_csv(rows).split("\n", 1)[1].replace(",", ";").encode())
    assert "semicolon-separated" in message and rows[0]["pesel"] not in message


def test_missing_and_unexpected_columns_are_named() -> None:
    header = ["album", "pesel", "imie", "last_name", "email", "study_level", "status", "els_number",
              "els_valid_until", "removed_on", "00210110007"]
    message = _problem((",".join(header) + "\n").encode())
    assert "missing first_name" in message
    assert "unexpected imie" in message
    assert "1 unexpected column(s) not shown" in message and "00210110007" not in message


def test_columns_out_of_order_are_named() -> None:
    header = list(HEADER)
    header[2], header[3] = header[3], header[2]
    message = _problem((",".join(header) + "\n").encode())
    assert "out of order: column 3 is last_name, expected first_name" in message


def test_repeated_column_is_named() -> None:
    header = [*HEADER[:9], "album"]
    message = _problem((",".join(header) + "\n").encode())
    assert "missing removed_on" in message and "repeated album" in message


def test_upper_case_names_get_a_hint() -> None:
    message = _problem((",".join(h.upper() for h in HEADER) + "\n").encode())
    assert "lower case" in message


def test_a_pesel_shifted_into_another_column_is_masked() -> None:
    row = dict(_rows(1)[0])
    row["study_level"] = row["pesel"]
    with pytest.raises(RegisterImportError) as caught:
        parse_register(rows_to_csv([row]).encode(), box=SecretBox(TEST_SECRET.encode()),
                       email_domains=[UNIVERSITY_DOMAIN])
    assert row["pesel"] not in str(caught.value)
    assert row["pesel"][:2] + "*******" + row["pesel"][-2:] in str(caught.value)
