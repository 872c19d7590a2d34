"""The credential lifecycle as an explicit state machine, every move recorded.

    requested ──issue──▶ pending_activation ──activate──▶ active
        │                   │      │                        │  ╲
        └──revoke──┐        │      └─expire (30 days)─┐     │   renew (validity moved on)
                   ▼        ▼                         ▼     ▼
                 revoked ◀──────── revoke ─────────  expired

Under the ELS policy an active credential is never renewed: a new application replaces it
(revoked as "replaced" in the transaction that issues the new one's activation data).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Session, col

from core.app.errors import TransitionError
from core.messaging import outbox
from core.storage import audit
from core.storage.models import Credential, CredentialEvent, CredentialState, OutboxMessage

__all__ = ["ACTIVATION_KIND", "ALLOWED", "ENDS_WITH_THE_CREDENTIAL", "STUDIES_ENDED", "EndReason", "cancel_reason",
           "transition"]

S = CredentialState

ALLOWED: dict[CredentialState, frozenset[CredentialState]] = {
    S.REQUESTED: frozenset({S.PENDING_ACTIVATION, S.REVOKED, S.EXPIRED}),
    S.PENDING_ACTIVATION: frozenset({S.ACTIVE, S.EXPIRED, S.REVOKED}),
    S.ACTIVE: frozenset({S.ACTIVE, S.EXPIRED, S.REVOKED}),  # active -> active is a renewal
    S.EXPIRED: frozenset(),
    S.REVOKED: frozenset(),
}


# The outbox kind of the mails that carry activation data (first and resent).
ACTIVATION_KIND = "activation"
# What a credential's end makes pointless to send: its activation data (dead now) and its
# reminders (to activate, or that it runs out). The notice of the end itself is queued after.
ENDS_WITH_THE_CREDENTIAL: frozenset[str] = frozenset({ACTIVATION_KIND, "reminder"})


def cancel_reason(to_state: CredentialState, reason: str) -> str:
    """What a mail taken back at a credential's end says in its row (staff read it)."""
    return f"cancelled: the credential was {to_state.value} ({reason}) first"


class EndReason(StrEnum):
    """Why a credential stopped: shown to staff, explained to students."""

    LOST_PHONE = "lost_phone"
    NEW_PHONE = "new_phone"
    STUDENT_REQUEST = "student_request"
    GRADUATION = "graduation"
    REMOVAL = "removal"
    STAFF = "staff"
    VALIDITY_ENDED = "validity_ended"
    ACTIVATION_WINDOW_PASSED = "activation_window_passed"
    REMOVAL_GRACE_ENDED = "removal_grace_ended"
    NOT_ELIGIBLE = "not_eligible"
    # ELS policy: a new application for the next semester took its place (core.credentials.renewal.replace_credential).
    REPLACED = "replaced"
    # The register's university address changed: activation data sent to the old one is dead
    # (core.students.email_change); the student applies again and gets it at the new address.
    EMAIL_CHANGED = "email_changed"


# After these the student cannot simply apply again (a graduate or a student removed from the
# list is refused): what they are told points to the dean's office, never to a new application.
STUDIES_ENDED: frozenset[str] = frozenset({EndReason.GRADUATION, EndReason.REMOVAL, EndReason.REMOVAL_GRACE_ENDED})


def transition(
    session: Session,
    credential: Credential,
    to_state: CredentialState,
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> CredentialEvent:
    """Move `credential` to `to_state` if the lifecycle allows it; record who, why and when."""
    from_state = CredentialState(credential.state)
    if to_state not in ALLOWED[from_state]:
        raise TransitionError(f"credential {credential.public_id}: {from_state} -> {to_state} is not allowed")
    credential.state = to_state
    credential.updated_at = now
    if to_state is S.PENDING_ACTIVATION:
        credential.issued_at = now
    elif to_state is S.ACTIVE and from_state is S.PENDING_ACTIVATION:
        credential.activated_at = now
    elif to_state is S.ACTIVE:
        credential.renewed_at = now
    elif to_state in (S.EXPIRED, S.REVOKED):
        credential.ended_at = now
        credential.end_reason = reason
        credential.code_hash = None
        credential.qr_token_hash = None
        if credential.id is not None:
            outbox.cancel_waiting(session, col(OutboxMessage.credential_id) == credential.id,
                                  col(OutboxMessage.kind).in_(ENDS_WITH_THE_CREDENTIAL),
                                  reason=cancel_reason(to_state, reason), now=now)
    session.add(credential)
    event = CredentialEvent(
        credential_id=credential.id or 0,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        reason=reason,
        at=now,
    )
    session.add(event)
    audit.record(
        session,
        at=now,
        actor=actor,
        action=f"credential.{to_state}",
        student_id=credential.student_id,
        credential_id=credential.id,
        from_state=str(from_state),
        reason=reason,
    )
    return event
