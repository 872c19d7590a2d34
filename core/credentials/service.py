"""Credential services: request, renew, replace, revoke, activate. One unit of work each, committed by the caller.

Extending a credential for the next semester depends on the issuing policy (docs/domain.md):
stand-alone, it is renewed (`renew`: the same credential, its validity moved on; mObywatel
fetches the new student certificate by itself); under the ELS policy it is tied to the
card's validity and is never renewed: the student applies again once the card is extended
(`replace_credential`: a new credential with new activation data, the current one revoked).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.app.errors import ActivationError, ConflictError, EligibilityError, NotFoundError
from core.credentials.compose import activation_email, notice_email
from core.credentials.issuer import ActivationData
from core.credentials.lifecycle import ACTIVATION_KIND, EndReason, transition
from core.messaging import outbox
from core.security import ratelimit
from core.storage import audit
from core.storage.models import (
    LIVE_STATES,
    Application,
    Credential,
    CredentialEvent,
    CredentialState,
    OutboxMessage,
    Student,
    StudentStatus,
)
from core.students.eligibility import Policy, check_eligibility, validity_end
from core.students.semester import end_of_day, removal_deadline

__all__ = [
    "CLOCK_ACTOR",
    "activate",
    "activation_window",
    "effective_activation_deadline",
    "effective_valid_until",
    "expire_activation_window",
    "expire_overdue_activation",
    "find_credential",
    "latest_credential",
    "live_credential",
    "new_credential",
    "queue_activation",
    "request_credential",
    "resend_activation",
    "revoke",
]

# Counted attempts (core.security.ratelimit) of resending one credential's activation data.
RESEND_KIND = "code_resend"
RESEND_WINDOW = timedelta(days=1)


def live_credential(session: Session, student_id: int) -> Credential | None:
    return session.exec(
        select(Credential)
        .where(Credential.student_id == student_id)
        .where(col(Credential.state).in_([s.value for s in LIVE_STATES]))
    ).first()


def latest_credential(session: Session, student_id: int) -> Credential | None:
    return session.exec(
        select(Credential)
        .where(Credential.student_id == student_id)
        .order_by(sa.desc(col(Credential.created_at)), sa.desc(col(Credential.id)))
    ).first()


def find_credential(session: Session, ref: str) -> Credential:
    """By numeric id or public id."""
    credential = None
    if ref.isdigit():
        credential = session.get(Credential, int(ref))
    if credential is None:
        credential = session.exec(select(Credential).where(Credential.public_id == ref)).first()
    if credential is None:
        raise NotFoundError(f"no credential {ref!r}")
    return credential


# Who expires data found past its deadline between sweeps: the clock did it, not the student.
CLOCK_ACTOR = "lifecycle"


def effective_valid_until(student: Student, credential: Credential) -> date:
    """The day a credential really ends: its validity, or sooner one month after removal from the student list."""
    # The same condition as the sweep's removal revocation: a stale removed_on on a reinstated
    # student ends nothing.
    if student.status == StudentStatus.REMOVED and student.removed_on is not None:
        return min(credential.valid_until, removal_deadline(student.removed_on))
    return credential.valid_until


def effective_activation_deadline(student: Student, credential: Credential) -> datetime | None:
    """The last moment the credential's activation data can serve: its deadline, or sooner the
    end of the credential's last day when a removal brings that end forward (data activating a
    credential that has ended is of no use, and the student must not be told to wait for it)."""
    deadline = credential.activation_deadline
    if deadline is None:
        return None
    return min(deadline, end_of_day(effective_valid_until(student, credential)))


def activation_window(ctx: AppContext, valid_until: date, now: datetime) -> timedelta:
    """The activation window of data issued `now` (30 days by default), never past the credential's last day.

    Activation data for a credential that has already ended is of no use, under either
    policy: the deadline must not promise more. Under the ELS policy the card's date can
    come within the window; the semester's validity date (31 March for data issued from
    October to February, 31 October from March to September) is always more than 30 days
    away: it cuts only a window configured longer than that.
    """
    return min(ctx.activation_window, max(timedelta(0), end_of_day(valid_until) - now))


def expire_activation_window(ctx: AppContext, session: Session, credential: Credential, *, now: datetime,
                             actor: str) -> None:
    """The activation data died unused: the credential expires and the student must apply again.

    The one move for it, made by the nightly sweep and by a conversation that meets such a
    credential before the sweep has run; each caller tells the student its own way.
    """
    ctx.issuer.invalidate(credential)
    transition(session, credential, CredentialState.EXPIRED, actor=actor,
               reason=EndReason.ACTIVATION_WINDOW_PASSED, now=now)


def expire_overdue_activation(ctx: AppContext, session: Session, student_id: int, *,
                              actor: str = CLOCK_ACTOR) -> bool:
    """Expire the student's pending credential if its activation deadline has passed; says if it did.

    The sweep runs nightly; a student asking in between must not be told to activate by a
    date already gone, nor be refused a new application because of dead data.
    """
    now = ctx.clock.now()
    query = (
        select(Credential)
        .where(Credential.student_id == student_id)
        .where(Credential.state == CredentialState.PENDING_ACTIVATION)
        .where(col(Credential.activation_deadline) < now)
    )
    if session.get_bind().dialect.name == "postgresql":
        # A sweep moving the same row meanwhile: wait for it, and the re-checked WHERE drops
        # the row, so it is not moved (and recorded) twice. SQLite holds one writer at a time.
        query = query.with_for_update().execution_options(populate_existing=True)
    credential = session.exec(query).first()
    if credential is None:
        return False
    expire_activation_window(ctx, session, credential, now=now, actor=actor)
    return True


def queue_activation(
    ctx: AppContext,
    session: Session,
    student: Student,
    credential: Credential,
    language: str,
) -> None:
    now = ctx.clock.now()
    data = ctx.issuer.issue(credential, now, activation_window(ctx, credential.valid_until, now))
    transition(
        session,
        credential,
        CredentialState.PENDING_ACTIVATION,
        actor="issuer",
        reason="activation_data_issued",
        now=now,
    )
    _mail_activation(ctx, session, student, credential, data, language, key=f"activation:{credential.public_id}")


def _mail_activation(ctx: AppContext, session: Session, student: Student, credential: Credential,
                     data: ActivationData, language: str, *, key: str, resent: bool = False) -> None:
    now = ctx.clock.now()
    message = activation_email(
        ctx.catalog,
        student=student,
        credential=credential,
        data=data,
        university=ctx.settings.university.name,
        language=language,
        contact=ctx.contact,
        resent=resent,
    )
    # Only ever the register address: never one typed into a chat or an e-mail's From.
    outbox.enqueue(
        session,
        ctx.box,
        key=key,
        channel="email",
        recipient=student.email,
        kind=ACTIVATION_KIND,
        message=message,
        now=now,
        language=language,
        student_id=student.id,
        credential_id=credential.id,
    )


def resend_activation(
    ctx: AppContext,
    session: Session,
    credential: Credential,
    *,
    actor: str,
    language: str = "pl",
) -> datetime:
    """Issue a pending credential's activation data anew and mail it to the register address only.

    Core keeps only hashes, so the data sent before cannot be sent again: a new activation
    code and QR code replace it (the old ones stop working) for the same credential. The
    activation deadline stays as it was (docs/domain.md, "Resending activation data"): a
    resend is a second delivery, not a new application. Counted against the credential,
    at most `credential.activation_resends_per_day` a day; audited. Returns the deadline.
    Raises ConflictError when the credential is not waiting for activation or its window
    has passed (the student applies again), RateLimitedError when resent too often.
    """
    now = ctx.clock.now()
    if session.get_bind().dialect.name == "postgresql":
        # An activation, a revocation or another resend of the same credential meanwhile: wait
        # for it and see the row as it committed it. SQLite holds one writer at a time.
        session.exec(
            select(Credential).where(Credential.id == credential.id).with_for_update()
            .execution_options(populate_existing=True)
        ).one()
    if credential.state != CredentialState.PENDING_ACTIVATION:
        raise ConflictError(f"credential {credential.id} is {credential.state}, not waiting for activation")
    student = session.get(Student, credential.student_id)
    deadline = effective_activation_deadline(student, credential) if student is not None else None
    if student is None or credential.activation_deadline is None or deadline is None or deadline <= now:
        raise ConflictError(f"credential {credential.id}: its activation window has passed; the student applies again")
    scopes = [("credential", str(credential.id))]
    ratelimit.check_allowed(session, RESEND_KIND, scopes, now=now,
                            limit=ctx.settings.credential.activation_resends_per_day, window=RESEND_WINDOW)
    ratelimit.record(session, RESEND_KIND, scopes, now=now)
    ctx.issuer.invalidate(credential)
    # The same deadline: issued for what is left of the window (never past the credential's end).
    data = ctx.issuer.issue(credential, now, credential.activation_deadline - now)
    credential.updated_at = now
    session.add(credential)
    # Not a state move (pending stays pending), but part of the credential's history all the same.
    session.add(CredentialEvent(credential_id=credential.id or 0, from_state=CredentialState.PENDING_ACTIVATION,
                                to_state=CredentialState.PENDING_ACTIVATION, actor=actor,
                                reason="activation_data_reissued", at=now))
    audit.record(session, at=now, actor=actor, action="credential.activation_resent",
                 student_id=student.id, credential_id=credential.id)
    _withdraw_unsent_activation_mails(session, credential, now)
    _mail_activation(ctx, session, student, credential, data, language,
                     key=f"activation-resend:{credential.public_id}:{uuid.uuid4().hex}", resent=True)
    return data.deadline


def _withdraw_unsent_activation_mails(session: Session, credential: Credential, now: datetime) -> None:
    """Take back this credential's activation mails still waiting in the outbox (the mail server was
    away): the data in them died with the resend, and the student would get a dead code after the
    new one. Kept as cancelled; a mail being sent at this moment (leased) is left to finish; on
    PostgreSQL a drainer's claim in progress is waited for and then seen as such."""
    outbox.cancel_waiting(session, col(OutboxMessage.credential_id) == credential.id,
                          col(OutboxMessage.kind) == ACTIVATION_KIND,
                          reason="cancelled: new activation data was sent in its place", now=now)


def request_credential(
    ctx: AppContext,
    session: Session,
    student: Student,
    *,
    channel: str,
    actor: str,
    language: str = "pl",
) -> Credential:
    """A new credential: checks, application, credential, activation e-mail queued."""
    now = ctx.clock.now()
    today = ctx.clock.today()
    policy = Policy(ctx.settings.policy)
    eligibility = check_eligibility(student, policy, today)
    if not eligibility.ok:
        raise EligibilityError(list(eligibility.reasons))
    existing = live_credential(session, student.id or 0)
    if existing is not None:
        raise ConflictError(f"student already has a {existing.state} credential")
    credential = new_credential(session, student, policy, validity_end(student, policy, today),
                                 kind="new", channel=channel, actor=actor, now=now)
    audit.record(
        session, at=now, actor=actor, action="application.new",
        student_id=student.id, credential_id=credential.id, channel=channel,
    )
    queue_activation(ctx, session, student, credential, language)
    return credential


def new_credential(
    session: Session,
    student: Student,
    policy: Policy,
    valid_until: date,
    *,
    kind: str,
    channel: str,
    actor: str,
    now: datetime,
) -> Credential:
    """A requested credential with its first lifecycle event and its application (wniosek)."""
    credential = Credential(
        student_id=student.id or 0,
        state=CredentialState.REQUESTED,
        policy=policy,
        valid_until=valid_until,
        created_at=now,
        updated_at=now,
    )
    session.add(credential)
    session.flush()
    session.add(
        CredentialEvent(
            credential_id=credential.id or 0,
            from_state=None,
            to_state=CredentialState.REQUESTED,
            actor=actor,
            reason="application",
            at=now,
        )
    )
    session.add(
        Application(
            student_id=student.id or 0,
            kind=kind,
            channel=channel,
            credential_id=credential.id,
            created_at=now,
        )
    )
    return credential


# The generic notice invites a new application; these reasons (STUDIES_ENDED) get their own,
# the same the sweep sends when it revokes for them.
_ENDED_NOTICES: dict[str, str] = {
    EndReason.REMOVAL: "email.revoked_removal",
    EndReason.REMOVAL_GRACE_ENDED: "jobs.notice.revoked_removal",
    EndReason.GRADUATION: "jobs.notice.revoked_graduation",
}


def revoke(
    ctx: AppContext,
    session: Session,
    credential: Credential,
    *,
    reason: EndReason | str,
    actor: str,
    language: str = "pl",
    notify: bool = True,
) -> Credential:
    """Revoke (unieważnienie): the activation data dies with it; the student is told by e-mail."""
    now = ctx.clock.now()
    ctx.issuer.invalidate(credential)
    transition(session, credential, CredentialState.REVOKED, actor=actor, reason=str(reason), now=now)
    student = session.get(Student, credential.student_id)
    if notify and student is not None:
        outbox.enqueue(
            session, ctx.box,
            key=f"revoked:{credential.public_id}",
            channel="email", recipient=student.email, kind="revoked",
            message=notice_email(
                ctx.catalog, _ENDED_NOTICES.get(str(reason), "email.revoked"), language=language,
                first_name=student.first_name, contact=ctx.contact,
                # Each half of the bilingual mail in its own language, not the student's twice.
                catalog_params={"reason": f"end_reason.{reason}"},
                university=ctx.settings.university.name,
            ),
            now=now, language=language, student_id=student.id, credential_id=credential.id,
        )
    return credential


def activate(
    ctx: AppContext, session: Session, credential: Credential, code: str, *, actor: str
) -> Credential:
    """What mObywatel does when the student types the code; used by the local issuer's stand-in."""
    now = ctx.clock.now()
    limits = ctx.settings.limits
    scopes = [("student", str(credential.student_id))]
    ratelimit.check_allowed(
        session, "activation", scopes, now=now,
        limit=limits.guesses_per_hour, window=timedelta(minutes=limits.guess_window_minutes),
    )
    if credential.state != CredentialState.PENDING_ACTIVATION:
        raise ActivationError(f"credential is {credential.state}, not pending activation")
    try:
        ctx.issuer.redeem(credential, code, now)
    except ActivationError:
        ratelimit.record_failure(session, "activation", scopes, now=now)
        session.commit()  # the failed guess must count even though the caller sees an error
        raise
    transition(session, credential, CredentialState.ACTIVE, actor=actor, reason="activated", now=now)
    return credential
