"""A student's register e-mail address changed: what was meant for the old address must die.

Activation data, and the chat's binding code, go ONLY to the student's university address
from the register (docs/domain.md). When an import changes that address, whatever was issued
for the old one must stop working, or the old mailbox (a recycled alias, a typo the dean's
office just corrected, someone else's box) keeps a working activation code or binding
code. In the import's transaction, for each student whose address changed:

- mail to the old address that is not sent yet is cancelled (status cancelled, reason given,
  body wiped; the row stays for the audit); mail of a support thread is left alone: it
  answers a message the student wrote from that address and carries no activation data;
- the student's unused chat binding codes expire (a code typed later gets "expired",
  and the resend goes to the new address);
- a credential waiting for activation is revoked (its activation data dies at the
  issuer), so the code in the old mailbox is dead; the student must apply again, and is
  told so at the NEW address when the catalog has the notice (`NOTICE_KEY`);
- an active credential is left alone: it is already on the phone, no data is pending.

Every change is audited (`register.email_changed`), without the addresses themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.credentials.compose import notice_email
from core.credentials.lifecycle import EndReason, transition
from core.messaging import outbox
from core.messaging.notify import email_language, email_languages
from core.storage import audit
from core.storage.models import BindingCode, Credential, CredentialState, OutboxMessage, OutboxStatus, Student

if TYPE_CHECKING:
    from core.app.context import AppContext

__all__ = ["CANCEL_REASON", "END_REASON", "NOTICE_KEY", "EmailChange", "EmailChangeReport", "apply_email_changes"]

END_REASON = EndReason.EMAIL_CHANGED
# Sent to the new address; a catalog without it (an installation's own texts) sends nothing.
NOTICE_KEY = "email.email_changed"
CANCEL_REASON = "cancelled: the student's register e-mail address changed before it was sent"
# The outbox rows a change cancels: not sent yet. A row being sent right now (its lease
# running) is cancelled too: what it carries is dead by then anyway (see the module doc).
_UNSENT = (OutboxStatus.PENDING, OutboxStatus.SENDING)


@dataclass(frozen=True)
class EmailChange:
    """The register address of a student changed from `old_email` to `new_email`.

    `student_id` is the row the old address belonged to; `new_student_id` the row that now
    holds the student (the same one, or the new album a PESEL moved to in a sync).
    """

    student_id: int
    old_email: str
    new_email: str
    new_student_id: int | None = None

    @property
    def current_student_id(self) -> int:
        return self.new_student_id or self.student_id


@dataclass
class EmailChangeReport:
    students: int = 0
    mail_cancelled: int = 0
    codes_expired: int = 0
    credentials_revoked: int = 0
    notices: int = 0
    # Students whose pending activation was revoked but who got no notice (no catalog text).
    not_notified: list[int] = field(default_factory=list)


def _cancel_mail(session: Session, change: EmailChange, now: datetime) -> int:
    rows = session.exec(
        select(OutboxMessage).where(
            OutboxMessage.student_id == change.student_id,
            OutboxMessage.channel == "email",
            col(OutboxMessage.thread_id).is_(None),
            sa.func.lower(col(OutboxMessage.recipient)) == change.old_email.lower(),
            col(OutboxMessage.status).in_([s.value for s in _UNSENT]),
        )
    ).all()
    for row in rows:
        outbox.mark_cancelled(row, CANCEL_REASON, now)
        session.add(row)
    return len(rows)


def _expire_binding_codes(session: Session, student_id: int, now: datetime) -> int:
    # The chat accepts a code while `now <= expires_at`: one second before now is expired.
    expired_at = now - timedelta(seconds=1)
    rows = session.exec(
        select(BindingCode).where(
            BindingCode.student_id == student_id,
            col(BindingCode.used_at).is_(None),
            col(BindingCode.expires_at) > expired_at,
        )
    ).all()
    for row in rows:
        row.expires_at = expired_at
        session.add(row)
    return len(rows)


def _pending_credentials(session: Session, student_id: int) -> list[Credential]:
    return list(session.exec(
        select(Credential).where(
            Credential.student_id == student_id,
            Credential.state == CredentialState.PENDING_ACTIVATION,
        )
    ).all())


def _notice_ready(ctx: AppContext) -> bool:
    return all(ctx.catalog.has(language, f"{NOTICE_KEY}.{part}")
               for language in ("pl", "en") for part in ("subject", "body"))


def _notify(ctx: AppContext, session: Session, student: Student, credential: Credential, now: datetime) -> None:
    # Imported here: core.jobs imports the register sync, which imports this module.

    language = email_language(ctx, email_languages(session, [student.id or 0]), student.id)
    message = notice_email(ctx.catalog, NOTICE_KEY, language=language, first_name=student.first_name,
                           university=ctx.settings.university.name, contact=ctx.contact)
    outbox.enqueue(
        session, ctx.box, key=f"email-changed:{credential.public_id}", channel="email",
        recipient=student.email, kind="email_changed", message=message, now=now, language=language,
        student_id=student.id, credential_id=credential.id,
    )


def apply_email_changes(
    session: Session,
    changes: list[EmailChange],
    *,
    now: datetime,
    actor: str,
    ctx: AppContext | None = None,
    dry_run: bool = False,
) -> EmailChangeReport:
    """Cancel, expire and revoke what was meant for each old address; in the caller's transaction.

    Without `ctx` (or in a dry run) the issuer is not called and no notice is queued: the
    credential is still revoked here, which wipes the activation hashes the local issuer
    checks. The caller must have written the new addresses (the notice goes to the row's).
    """
    report = EmailChangeReport()
    if not changes:
        return report
    session.flush()
    notice = ctx is not None and not dry_run and _notice_ready(ctx)
    for change in changes:
        report.students += 1
        cancelled = _cancel_mail(session, change, now)
        codes = _expire_binding_codes(session, change.student_id, now)
        revoked: list[int] = []
        for credential in _pending_credentials(session, change.student_id):
            if ctx is not None and not dry_run:
                ctx.issuer.invalidate(credential)
            transition(session, credential, CredentialState.REVOKED, actor=actor, reason=END_REASON, now=now)
            revoked.append(credential.id or 0)
            student = session.get(Student, change.current_student_id)
            if notice and ctx is not None and student is not None:
                _notify(ctx, session, student, credential, now)
                report.notices += 1
            else:
                report.not_notified.append(change.current_student_id)
        report.mail_cancelled += cancelled
        report.codes_expired += codes
        report.credentials_revoked += len(revoked)
        audit.record(
            session, at=now, actor=actor, action="register.email_changed",
            student_id=change.current_student_id, previous_student_id=change.student_id,
            mail_cancelled=cancelled, binding_codes_expired=codes, credentials_revoked=revoked,
            revoke_reason=f"{END_REASON} (register e-mail address changed)" if revoked else None,
            notice_queued=bool(revoked) and notice,
        )
    return report
