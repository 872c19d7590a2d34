"""Semester boundaries (31 March / 31 October), removal grace and validity under both policies."""

from __future__ import annotations

from datetime import date

import pytest

from core.storage.models import Student
from core.students.eligibility import Policy, validity_end
from core.students.semester import add_months, removal_deadline, semester_end, semester_start


@pytest.mark.parametrize(
    ("today", "end"),
    [
        # Winter semester (October to February): valid to 31 March, also when issued in October.
        (date(2026, 10, 1), date(2027, 3, 31)),
        (date(2026, 10, 31), date(2027, 3, 31)),
        (date(2026, 11, 1), date(2027, 3, 31)),
        (date(2026, 12, 31), date(2027, 3, 31)),
        (date(2027, 2, 28), date(2027, 3, 31)),
        # Summer semester (March to September): valid to 31 October, also when issued in March.
        (date(2027, 3, 1), date(2027, 10, 31)),
        (date(2027, 3, 31), date(2027, 10, 31)),
        (date(2027, 4, 1), date(2027, 10, 31)),
        (date(2027, 9, 30), date(2027, 10, 31)),
    ],
)
def test_semester_end(today: date, end: date) -> None:
    assert semester_end(today) == end


def test_semester_start() -> None:
    assert semester_start(date(2026, 10, 5)) == date(2026, 10, 1)
    assert semester_start(date(2027, 1, 5)) == date(2026, 10, 1)
    assert semester_start(date(2027, 3, 2)) == date(2027, 3, 1)


def test_one_month_grace_clamps_to_month_end() -> None:
    assert removal_deadline(date(2027, 1, 31)) == date(2027, 2, 28)
    assert removal_deadline(date(2026, 10, 15)) == date(2026, 11, 15)
    assert add_months(date(2026, 12, 15), 1) == date(2027, 1, 15)


def _student(**kw: object) -> Student:
    values: dict[str, object] = {
        "album": "1", "first_name": "A", "last_name": "B", "email": "a@x", "study_level": "first_cycle",
        "status": "active", "row_digest": "", "pesel_hash": "h", "els_number": "E",
        "els_valid_until": date(2027, 2, 28),
    }
    values.update(kw)
    return Student(**values)


def test_els_policy_caps_validity_at_card_date() -> None:
    assert validity_end(_student(), Policy.ELS, date(2026, 11, 2)) == date(2027, 2, 28)
    assert validity_end(_student(), Policy.STANDALONE, date(2026, 11, 2)) == date(2027, 3, 31)


def test_removal_caps_validity_at_one_month() -> None:
    removed = _student(status="removed", removed_on=date(2026, 11, 10))
    assert validity_end(removed, Policy.STANDALONE, date(2026, 11, 12)) == date(2026, 12, 10)


def test_a_stale_removal_date_of_a_reinstated_student_cuts_nothing() -> None:
    # The register keeps removed_on after a reinstatement; as in the sweep and the status,
    # only a removed student's removal date ends a credential.
    reinstated = _student(status="active", removed_on=date(2026, 3, 10))
    assert validity_end(reinstated, Policy.STANDALONE, date(2026, 10, 5)) == date(2027, 3, 31)
