"""Who may have a credential: every refusal reason, under both policies."""

from __future__ import annotations

from datetime import date

import pytest

from core.storage.models import Student
from core.students.eligibility import Policy, Reason, check_eligibility

TODAY = date(2026, 11, 2)


def _student(**kw: object) -> Student:
    values: dict[str, object] = {
        "album": "1", "first_name": "A", "last_name": "B", "email": "a@x", "study_level": "first_cycle",
        "status": "active", "row_digest": "", "pesel_hash": "h", "els_number": "ELS-1",
        "els_valid_until": date(2027, 3, 31),
    }
    values.update(kw)
    return Student(**values)


@pytest.mark.parametrize("level", ["first_cycle", "second_cycle", "long_cycle"])
@pytest.mark.parametrize("policy", list(Policy))
def test_eligible_levels(level: str, policy: Policy) -> None:
    assert check_eligibility(_student(study_level=level), policy, TODAY).ok


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"study_level": "doctoral"}, Reason.DOCTORAL),
        ({"study_level": "postgraduate"}, Reason.POSTGRADUATE),
        ({"status": "removed", "removed_on": date(2026, 10, 1)}, Reason.REMOVED),
        ({"status": "graduated"}, Reason.GRADUATED),
        ({"status": "suspended"}, Reason.SUSPENDED),
        ({"pesel_hash": None}, Reason.NO_PESEL),
    ],
)
@pytest.mark.parametrize("policy", list(Policy))
def test_refusals_under_both_policies(overrides: dict[str, object], reason: Reason, policy: Policy) -> None:
    result = check_eligibility(_student(**overrides), policy, TODAY)
    assert not result.ok
    assert reason in result.reasons


def test_els_policy_needs_a_valid_card() -> None:
    expired = _student(els_valid_until=date(2026, 10, 31))
    assert check_eligibility(expired, Policy.ELS, TODAY).reasons == (Reason.ELS_EXPIRED,)
    assert check_eligibility(expired, Policy.STANDALONE, TODAY).ok
    missing = _student(els_number=None, els_valid_until=None)
    assert check_eligibility(missing, Policy.ELS, TODAY).reasons == (Reason.ELS_MISSING,)
    assert check_eligibility(missing, Policy.STANDALONE, TODAY).ok


def test_several_reasons_are_all_listed() -> None:
    result = check_eligibility(_student(study_level="doctoral", pesel_hash=None), Policy.STANDALONE, TODAY)
    assert result.reasons == (Reason.DOCTORAL, Reason.NO_PESEL)
