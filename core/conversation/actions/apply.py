"""Applying for a credential: the offer (or why not), its confirmation's question, and the
application once confirmed; under the ELS policy a new application may replace the active one."""

from __future__ import annotations

from core.app.clock import WARSAW
from core.conversation import ops
from core.conversation.actions.renewal import els_situation
from core.conversation.overview import load_overview, service_error
from core.conversation.state import Step
from core.conversation.status import ineligible_text
from core.conversation.turn import CONFIRM_YES, Flow, Steps, Turn
from core.credentials.compose import format_date
from core.storage.models import LIVE_STATES
from core.students.eligibility import Policy

__all__ = ["do_replace", "do_request", "offer_request"]


def offer_request(turn: Turn) -> Steps:
    overview = yield from load_overview(turn)
    if overview is None:
        return
    turn.state.step = Step.MENU
    if overview.ineligible:
        turn.say_text(ineligible_text(turn.t, overview.ineligible))
        return
    credential = overview.credential
    if credential is not None and credential.state == "active" and overview.replacement_possible:
        _offer_replace(turn, overview, credential)
        return
    if credential is not None and credential.state in LIVE_STATES:
        text = turn.t(f"request.already_{credential.state}")
        if credential.state == "active" and turn.config.policy == Policy.ELS:
            # Not "revoke it first" alone: under the ELS policy a new application replaces it, and
            # the student hears when that becomes possible.
            text += "\n\n" + els_situation(turn, overview, credential)
        turn.say_text(text, [[("status", "menu:status"), ("revoke", "menu:revoke")]])
        return
    turn.state.step = Step.CONFIRM_REQUEST
    _ask_confirm_request(turn, overview)


def _ask_confirm_request(turn: Turn, overview: ops.Overview) -> None:
    short_until = overview.short_validity_until
    if short_until is not None:
        # Told before issuing, so the student can choose to extend the card first.
        days = (short_until - turn.now.astimezone(WARSAW).date()).days + 1
        turn.say("request.els_expires_soon", until=format_date(short_until), days=turn.days(days))
    buttons = [[("confirm", f"{CONFIRM_YES}request"), ("cancel", "confirm:no")]]
    if overview.short_activation_until is not None:
        # Not "valid for 30 days" when the credential ends sooner: the data dies with it.
        turn.say("request.confirm_until", buttons, email=overview.masked_email,
                 deadline=turn.when(overview.short_activation_until))
        return
    turn.say("request.confirm", buttons, email=overview.masked_email,
             days=turn.days(turn.config.activation_window_days))


def _offer_replace(turn: Turn, overview: ops.Overview, credential: ops.CredentialView) -> None:
    """ELS policy: the same confirmation as a first application, saying that it replaces the active one."""
    turn.state.step = Step.CONFIRM_REPLACE
    buttons = [[("confirm", f"{CONFIRM_YES}replace"), ("cancel", "confirm:no")]]
    params = {"email": overview.masked_email, "valid_until": format_date(credential.valid_until),
              "until": format_date(overview.replacement_until) if overview.replacement_until else ""}
    if overview.replacement_activation_until is not None:
        turn.say("request.confirm_replace_until", buttons, deadline=turn.when(overview.replacement_activation_until),
                 **params)
        return
    turn.say("request.confirm_replace", buttons, days=turn.days(turn.config.activation_window_days), **params)


def do_request(turn: Turn, *, replace: bool = False) -> Flow:
    """A new application; `replace` (ELS policy): it takes the place of the active credential."""
    assert turn.state.student_id is not None
    result = yield ops.RequestCredential(turn.state.student_id, turn.lang, replace=replace)
    if not result.ok or result.credential is None:
        service_error(turn, result)
        return []
    overview = yield ops.StudentOverview(turn.state.student_id)
    deadline = result.credential.activation_deadline
    turn.say("request.done_replace" if replace else "request.done",
             [[("activation_help", "menu:help"), ("status", "menu:status")]],
             email=overview.masked_email if overview else "", deadline=turn.when(deadline) if deadline else "",
             valid_until=format_date(result.credential.valid_until))
    return []


def do_replace(turn: Turn) -> Flow:
    return (yield from do_request(turn, replace=True))
