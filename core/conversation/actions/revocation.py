"""Revoking a credential: the reason asked (or heard in the student's words: "I lost my phone"),
its confirmation's question, and the revocation once confirmed."""

from __future__ import annotations

from core.conversation import ops
from core.conversation.overview import load_overview, service_error, status_buttons
from core.conversation.state import Step
from core.conversation.turn import CONFIRM_YES, Flow, Steps, Turn
from core.storage.models import LIVE_STATES

__all__ = ["REVOKE_REASONS", "choose_revoke_reason", "do_revoke", "offer_revoke"]

REVOKE_REASONS = ("lost_phone", "new_phone", "student_request")


def offer_revoke(turn: Turn, reason: str | None = None) -> Steps:
    overview = yield from load_overview(turn)
    if overview is None:
        return
    credential = overview.credential
    if credential is None or credential.state not in LIVE_STATES:
        turn.state.step = Step.MENU
        if reason is not None:  # nothing to revoke: what to do with the new phone instead
            turn.say(f"revoke.nothing_{reason}", status_buttons(overview))
            return
        turn.say("revoke.nothing", [[("status", "menu:status")]])
        return
    if reason is not None:
        # Typed "I lost my phone": the same confirmation as the reason button, naming the action.
        turn.state.revoke_reason = reason
        turn.state.step = Step.CONFIRM_REVOKE
        turn.say("revoke.confirm_typed", [[("revoke_yes", f"{CONFIRM_YES}revoke"), ("cancel", "confirm:no")]],
                 reason=turn.t(f"revoke.because.{reason}"), days=turn.days(turn.config.activation_window_days))
        return
    turn.state.step = Step.REVOKE_REASON
    turn.say("revoke.ask_reason", [[("reason_lost_phone", "revoke:lost_phone")],
                                   [("reason_new_phone", "revoke:new_phone")],
                                   [("reason_student_request", "revoke:student_request")],
                                   [("cancel", "confirm:no")]])


def choose_revoke_reason(turn: Turn) -> Steps:
    """A reason button pressed: the confirmation naming it; anything else asks for the reason again.
    (Cancelling is the caller's: the same as every other step's.)"""
    reason = turn.button.removeprefix("revoke:")
    if reason not in REVOKE_REASONS:
        yield from offer_revoke(turn)
        return
    turn.state.revoke_reason = reason
    turn.state.step = Step.CONFIRM_REVOKE
    turn.say("revoke.confirm", [[("revoke_yes", f"{CONFIRM_YES}revoke"), ("cancel", "confirm:no")]],
             reason=turn.t(f"end_reason.{reason}"))


def do_revoke(turn: Turn) -> Flow:
    assert turn.state.student_id is not None
    reason = turn.state.revoke_reason or "student_request"
    result = yield ops.RevokeCredential(turn.state.student_id, reason, turn.lang)
    turn.state.revoke_reason = None
    if not result.ok:
        service_error(turn, result)
        return []
    # A phone's revocation: the new application waits for the phone, as the activation window starts at once.
    turn.say("revoke.done_phone" if reason in ("lost_phone", "new_phone") else "revoke.done",
             [[("issue_new", "menu:request")], [("status", "menu:status")]],
             days=turn.days(turn.config.activation_window_days))
    return []
