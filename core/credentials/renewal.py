"""Renewing a credential for the next semester (stand-alone policy) and replacing it by a new
application (ELS policy): whether either is possible now, and doing it in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlmodel import Session, select

from core.app.context import AppContext
from core.app.errors import ConflictError
from core.credentials.compose import format_date, format_datetime, notice_email
from core.credentials.lifecycle import EndReason, transition
from core.credentials.service import new_credential, queue_activation, revoke
from core.messaging import outbox
from core.storage import audit
from core.storage.models import (
    Application,
    Credential,
    CredentialState,
    Student,
)
from core.students.eligibility import Policy, check_eligibility, validity_end

__all__ = ["ELS_APPLY_AGAIN", "RenewalCheck", "ReplacementCheck", "renew", "renewal_check", "replace_credential",
           "replacement_check"]


# renewal_check's reason under the ELS policy: never renewed, a new application instead.
ELS_APPLY_AGAIN = "els_apply_again"


@dataclass(frozen=True)
class RenewalCheck:
    possible: bool
    reason: str  # a catalog key suffix: "ok", "not_active", "too_early", "els_apply_again", ...
    new_valid_until: date | None = None
    opens_on: date | None = None  # reason "too_early": the first day of the renewal window


def renewal_check(ctx: AppContext, student: Student, credential: Credential | None) -> RenewalCheck:
    """Renewal (a new student certificate for the next semester) when the rules allow it.

    Stand-alone policy only. Under the ELS policy the credential is valid for one semester, up
    to the card's date, and extending it needs a new application (docs/domain.md): never possible,
    reason ELS_APPLY_AGAIN; `replacement_check` says whether that new application is.
    """
    today = ctx.clock.today()
    policy = Policy(ctx.settings.policy)
    if policy is Policy.ELS:
        return RenewalCheck(False, ELS_APPLY_AGAIN)
    if credential is None or credential.state != CredentialState.ACTIVE:
        return RenewalCheck(False, "not_active")
    eligibility = check_eligibility(student, policy, today)
    if not eligibility.ok:
        return RenewalCheck(False, "not_eligible")
    window = timedelta(days=ctx.settings.credential.renewal_window_days)
    if today < credential.valid_until - window:
        return RenewalCheck(False, "too_early", opens_on=credential.valid_until - window)
    new_end = _next_validity_end(student, policy, credential, today)
    if new_end <= credential.valid_until:
        return RenewalCheck(False, "not_eligible")
    return RenewalCheck(True, "ok", new_end)


def _next_validity_end(student: Student, policy: Policy, credential: Credential, today: date) -> date:
    """The end of the validity that follows `credential`'s, for a renewal or a new application today.

    The validity of the semester after the credential's end: applying before that semester has
    begun (a window longer than a month, or an end cut short by the ELS card) must still reach
    into it. Under the ELS policy no later than the card.
    """
    target_day = max(today, credential.valid_until + timedelta(days=1))
    return validity_end(student, policy, target_day)


@dataclass(frozen=True)
class ReplacementCheck:
    """Whether a new application may replace the student's active credential (ELS policy).

    reason: "ok", "not_els" (stand-alone: renew instead), "not_active" (no active credential:
    an ordinary application, if any), "not_eligible", "too_early" (before `opens_on`, the first
    day of the last renewal_window_days), "els_not_extended" (the card is not valid beyond
    the current credential's end).
    """

    possible: bool
    reason: str
    new_valid_until: date | None = None
    opens_on: date | None = None


def replacement_check(ctx: AppContext, student: Student, credential: Credential | None) -> ReplacementCheck:
    """Under the ELS policy: may the student apply now for a new credential replacing the active one?

    Only in the last `renewal_window_days` of the current credential, and only when the ELS
    card is valid beyond its end (extended at the dean's office): otherwise the new credential
    would end no later than the one it replaces.
    """
    today = ctx.clock.today()
    policy = Policy(ctx.settings.policy)
    if policy is not Policy.ELS:
        return ReplacementCheck(False, "not_els")
    if credential is None or credential.state != CredentialState.ACTIVE:
        return ReplacementCheck(False, "not_active")
    if not check_eligibility(student, policy, today).ok:
        return ReplacementCheck(False, "not_eligible")
    new_end = _next_validity_end(student, policy, credential, today)
    if new_end <= credential.valid_until:
        return ReplacementCheck(False, "els_not_extended")
    opens_on = credential.valid_until - timedelta(days=ctx.settings.credential.renewal_window_days)
    if today < opens_on:
        return ReplacementCheck(False, "too_early", new_end, opens_on)
    return ReplacementCheck(True, "ok", new_end, opens_on)


def replace_credential(
    ctx: AppContext,
    session: Session,
    student: Student,
    credential: Credential,
    *,
    channel: str,
    actor: str,
    language: str = "pl",
) -> Credential:
    """A new application replacing the active credential (ELS policy): one transaction.

    The current credential is revoked (EndReason.REPLACED) and the new one is requested and
    gets its activation data, e-mailed to the register address; the student activates it in
    mObywatel within its activation window. A notice of the replacement goes to the same
    address, so an application the student did not make does not go unnoticed.
    """
    now = ctx.clock.now()
    if session.get_bind().dialect.name == "postgresql":
        # Another turn (the student's other chat) replacing or revoking it meanwhile: wait
        # for it, then see the row as it committed it. SQLite holds one writer at a time.
        session.exec(
            select(Credential).where(Credential.id == credential.id).with_for_update()
            .execution_options(populate_existing=True)
        ).one()
    check = replacement_check(ctx, student, credential)
    if not check.possible or check.new_valid_until is None:
        raise ConflictError(f"new application not possible: {check.reason}")
    policy = Policy(ctx.settings.policy)
    old_end = credential.valid_until
    revoke(ctx, session, credential, reason=EndReason.REPLACED, actor=actor, language=language, notify=False)
    session.flush()  # ended before the new one counts against the one-live-credential index
    replacement = new_credential(session, student, policy, check.new_valid_until,
                                  kind="replacement", channel=channel, actor=actor, now=now)
    audit.record(
        session, at=now, actor=actor, action="application.replacement",
        student_id=student.id, credential_id=replacement.id, channel=channel,
        replaced_credential_id=credential.id,
        old_valid_until=old_end.isoformat(), new_valid_until=check.new_valid_until.isoformat(),
    )
    queue_activation(ctx, session, student, replacement, language)
    outbox.enqueue(
        session, ctx.box,
        key=f"replaced:{credential.public_id}",
        channel="email", recipient=student.email, kind="replaced",
        message=notice_email(
            ctx.catalog, "email.replaced", language=language, contact=ctx.contact,
            first_name=student.first_name, old_valid_until=format_date(old_end),
            valid_until=format_date(replacement.valid_until),
            deadline=format_datetime(replacement.activation_deadline) if replacement.activation_deadline else "",
            university=ctx.settings.university.name,
        ),
        now=now, language=language, student_id=student.id, credential_id=credential.id,
    )
    return replacement


def renew(
    ctx: AppContext,
    session: Session,
    student: Student,
    credential: Credential,
    *,
    channel: str,
    actor: str,
    language: str = "pl",
) -> Credential:
    check = renewal_check(ctx, student, credential)
    if not check.possible or check.new_valid_until is None:
        raise ConflictError(f"renewal not possible: {check.reason}")
    now = ctx.clock.now()
    old_end = credential.valid_until
    credential.valid_until = check.new_valid_until
    transition(session, credential, CredentialState.ACTIVE, actor=actor, reason="renewed", now=now)
    session.add(
        Application(
            student_id=student.id or 0, kind="renewal", channel=channel,
            credential_id=credential.id, created_at=now,
        )
    )
    audit.record(
        session, at=now, actor=actor, action="application.renewal",
        student_id=student.id, credential_id=credential.id,
        old_valid_until=old_end.isoformat(), new_valid_until=credential.valid_until.isoformat(),
    )
    outbox.enqueue(
        session, ctx.box,
        key=f"renewed:{credential.public_id}:{credential.valid_until.isoformat()}",
        channel="email", recipient=student.email, kind="renewed",
        message=notice_email(
            ctx.catalog, "email.renewed", language=language, contact=ctx.contact,
            first_name=student.first_name, valid_until=format_date(credential.valid_until),
            university=ctx.settings.university.name,
        ),
        now=now, language=language, student_id=student.id, credential_id=credential.id,
    )
    return credential
