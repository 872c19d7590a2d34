"""PESEL validation with a reason a student can act on, hashing and masking."""

from __future__ import annotations

from datetime import date

import pytest

from core.security.secrets_box import SecretBox
from core.students.demo_register import make_pesel
from core.students.pesel import PeselProblem, birth_date, check_pesel, mask_pesel


def test_valid_pesel_from_each_century() -> None:
    for born in (date(1899, 12, 31), date(1999, 5, 17), date(2004, 2, 29), date(2150, 1, 1), date(2201, 7, 4)):
        number = make_pesel(born, serial=123, female=False)
        assert check_pesel(number) == (number, None)
        assert birth_date(number) == born


def test_century_is_carried_by_the_month() -> None:
    assert make_pesel(date(2001, 3, 9), 1, False)[2:4] == "23"
    assert make_pesel(date(1801, 3, 9), 1, False)[2:4] == "83"
    assert make_pesel(date(2101, 3, 9), 1, False)[2:4] == "43"
    assert make_pesel(date(2201, 3, 9), 1, False)[2:4] == "63"


def test_sex_digit_parity() -> None:
    assert int(make_pesel(date(2000, 1, 1), 7, female=True)[9]) % 2 == 0
    assert int(make_pesel(date(2000, 1, 1), 7, female=False)[9]) % 2 == 1


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("123", PeselProblem.LENGTH),
        ("123456789012", PeselProblem.LENGTH),
        ("", PeselProblem.DIGITS),
        ("9901011234a", PeselProblem.DIGITS),
        ("٠١٢٣٤٥٦٧٨٩٠", PeselProblem.DIGITS),  # Arabic-Indic digits are not PESEL digits
        ("'; DROP TABLE", PeselProblem.DIGITS),
    ],
)
def test_refused_with_reason(raw: str, problem: PeselProblem) -> None:
    assert check_pesel(raw) == (None, problem)


def test_wrong_check_digit() -> None:
    good = make_pesel(date(2002, 6, 15), 42, True)
    bad = good[:10] + str((int(good[10]) + 1) % 10)
    assert check_pesel(bad) == (None, PeselProblem.CHECKSUM)


def test_impossible_date() -> None:
    # 31 February 2002 with a correct check digit: only the date is wrong.
    body = "0222310012"
    weights = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)
    check = (10 - sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 10) % 10
    assert check_pesel(body + str(check)) == (None, PeselProblem.DATE)


def test_spaces_and_dashes_are_tolerated() -> None:
    number = make_pesel(date(2000, 12, 24), 5, True)
    spaced = f"{number[:6]} {number[6:]}"
    assert check_pesel(spaced) == (number, None)


def test_mask_shows_only_four_digits() -> None:
    assert mask_pesel("44051401359") == "44*******59"


def test_keyed_hash_depends_on_secret_and_kind() -> None:
    number = make_pesel(date(2000, 1, 1), 1, False)
    a, b = SecretBox(b"a" * 40), SecretBox(b"b" * 40)
    assert a.pesel_hash(number) != b.pesel_hash(number)
    assert a.pesel_hash(number) != a.keyed_hash("activation-code", number)
    assert number not in a.pesel_hash(number)
    assert a.verify("pesel", number, a.pesel_hash(number))
