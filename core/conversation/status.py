"""Where a student's credential stands, in words: the chat's /status and the e-mail answer to a
status question are built here, once, so the two never tell a student different things."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from core.conversation import ops
from core.credentials import service as credential_service
from core.credentials.compose import format_date, format_datetime
from core.credentials.lifecycle import STUDIES_ENDED, EndReason
from core.storage.models import Credential, Student

__all__ = ["credential_view", "ineligible_text", "status_lines"]

# A catalog lookup in the student's language: t(key, **params).
Text = Callable[..., str]


def credential_view(credential: Credential | None, student: Student | None = None) -> ops.CredentialView | None:
    """What the engine sees of a credential; with the student, the end a removal brings forward,
    and the activation deadline never after it (core.credentials.service.effective_activation_deadline)."""
    if credential is None:
        return None
    valid_until, deadline = credential.valid_until, credential.activation_deadline
    if student is not None:
        valid_until = credential_service.effective_valid_until(student, credential)
        deadline = credential_service.effective_activation_deadline(student, credential)
    return ops.CredentialView(credential.public_id, credential.state, valid_until,
                              deadline, credential.end_reason,
                              ends_on_removal=valid_until < credential.valid_until)


def ineligible_text(t: Text, reasons: Sequence[str]) -> str:
    """Why the student may not have one now. The catalog holds bare phrases; the list punctuation
    ("a;", "b.") is added here, so a single reason ends with a full stop."""
    items = [t(f"eligibility.{reason}").rstrip(" ;.") for reason in reasons]
    return t("eligibility.intro") + "\n" + ";\n".join(f"• {item}" for item in items) + "."


def status_lines(t: Text, view: ops.CredentialView | None, *, email: str, ineligible: Sequence[str],
                 after_active: Sequence[str] = ()) -> list[str]:
    """The status, a line each: the credential (`after_active`: what the channel adds to an active
    one), the earlier end a removal brings, and why the student may not have one now.

    A credential revoked because the studies ended points to the dean's office, and a student who
    may not have one now is never told to apply again, but told why not.
    """
    lines: list[str] = []
    if view is None:
        # Not "not yet" to someone who may never have one (doctoral, graduated): the reasons follow.
        lines.append(t("status.none_ineligible" if ineligible else "status.none"))
    elif view.state == "pending_activation" and view.activation_deadline:
        lines.append(t("status.pending_activation", email=email, deadline=format_datetime(view.activation_deadline),
                       valid_until=format_date(view.valid_until)))
    elif view.state == "active":
        lines.append(t("status.active", valid_until=format_date(view.valid_until)))
        lines.extend(after_active)
    elif view.state == "requested":
        lines.append(t("status.requested"))
    else:
        end_reason = view.end_reason or "validity_ended"
        reason = t(f"end_reason.{end_reason}")
        if view.state == "revoked" and end_reason in STUDIES_ENDED:
            lines.append(t("status.revoked_studies_ended", reason=reason))
        elif view.state == "expired" and end_reason == EndReason.ACTIVATION_WINDOW_PASSED:
            # Never activated, so it never worked: the activation data expired, not "your mLegitymacja".
            lines.append(t("status.expired_unused_ineligible" if ineligible else "status.expired_unused"))
        elif ineligible:
            # Not "you can apply again": the reasons below say why not.
            lines.append(t(f"status.{view.state}_ineligible", reason=reason))
        else:
            lines.append(t(f"status.{view.state}", reason=reason))
    if view is not None and view.ends_on_removal and view.state in ("pending_activation", "active"):
        lines.append(t("status.ends_on_removal", until=format_date(view.valid_until)))
    if ineligible:
        lines.append(ineligible_text(t, ineligible))
    return lines
