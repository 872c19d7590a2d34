"""Who may have a mobile student ID, under either issuing policy (docs/domain.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from core.storage.models import Student, StudentStatus, StudyLevel
from core.students.semester import removal_deadline, semester_end

__all__ = [
    "SHORT_VALIDITY_DAYS",
    "Eligibility",
    "Policy",
    "Reason",
    "check_eligibility",
    "normalize_els_number",
    "short_els_validity",
    "validity_end",
]

# A credential the ELS card lets live fewer days than this is worth a word before applying:
# a week is about the time a student needs to get the card extended at the dean's office.
SHORT_VALIDITY_DAYS = 7
# Spaces and every kind of dash (phones turn "-" into "–" on their own).
_ELS_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]+")


class Policy(StrEnum):
    ELS = "els"
    STANDALONE = "standalone"


class Reason(StrEnum):
    """Why someone may not have one; each has its own sentence in the message catalog."""

    DOCTORAL = "doctoral"
    POSTGRADUATE = "postgraduate"
    REMOVED = "removed"
    GRADUATED = "graduated"
    SUSPENDED = "suspended"
    NO_PESEL = "no_pesel"
    ELS_MISSING = "els_missing"
    ELS_EXPIRED = "els_expired"


ELIGIBLE_LEVELS = {StudyLevel.FIRST_CYCLE, StudyLevel.SECOND_CYCLE, StudyLevel.LONG_CYCLE}


@dataclass(frozen=True)
class Eligibility:
    reasons: tuple[Reason, ...]

    @property
    def ok(self) -> bool:
        return not self.reasons


def check_eligibility(student: Student, policy: Policy | str, today: date) -> Eligibility:
    """Every reason that applies, in the order a student would want to hear them."""
    reasons: list[Reason] = []
    if student.study_level == StudyLevel.DOCTORAL:
        reasons.append(Reason.DOCTORAL)
    elif student.study_level == StudyLevel.POSTGRADUATE:
        reasons.append(Reason.POSTGRADUATE)
    status_reason = {
        StudentStatus.REMOVED: Reason.REMOVED,
        StudentStatus.GRADUATED: Reason.GRADUATED,
        StudentStatus.SUSPENDED: Reason.SUSPENDED,
    }.get(StudentStatus(student.status))
    if status_reason:
        reasons.append(status_reason)
    if not student.pesel_hash:
        reasons.append(Reason.NO_PESEL)
    if Policy(policy) is Policy.ELS:
        if not student.els_number or not student.els_valid_until:
            reasons.append(Reason.ELS_MISSING)
        elif student.els_valid_until < today:
            reasons.append(Reason.ELS_EXPIRED)
    return Eligibility(tuple(reasons))


def validity_end(student: Student, policy: Policy | str, today: date) -> date:
    """Until when a credential issued or renewed today is valid.

    The semester end; under the ELS policy no later than the card; never later than one
    month after a removal from the student list.
    """
    end = semester_end(today)
    if Policy(policy) is Policy.ELS and student.els_valid_until:
        end = min(end, student.els_valid_until)
    # Only a removed student's date counts: the register keeps it after a reinstatement.
    if student.status == StudentStatus.REMOVED and student.removed_on:
        end = min(end, removal_deadline(student.removed_on))
    return end


def short_els_validity(student: Student, policy: Policy | str, today: date) -> date | None:
    """The end of a credential issued today if the ELS card cuts it to under SHORT_VALIDITY_DAYS, else None."""
    if Policy(policy) is not Policy.ELS or student.els_valid_until is None:
        return None
    end = validity_end(student, policy, today)
    days_valid = (end - today).days + 1  # valid through `end` itself
    if end != student.els_valid_until or days_valid >= SHORT_VALIDITY_DAYS:
        return None
    return end


def normalize_els_number(raw: str) -> str:
    """An ELS card number as compared: case, spaces, dashes and a leading "ELS" do not matter.

    Students type what they read off the card ("ELS-99892850", "els 99892850") or only
    the digits; the register may hold either form.
    """
    return _ELS_SEPARATORS.sub("", raw).upper().removeprefix("ELS")
