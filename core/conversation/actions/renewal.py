"""Renewing a credential: offered and confirmed under the stand-alone policy; under the ELS policy
nothing is renewed, and the student hears where they stand on the way to a new application."""

from __future__ import annotations

from core.conversation import ops
from core.conversation.overview import load_overview, service_error
from core.conversation.state import Step
from core.conversation.status import ineligible_text
from core.conversation.turn import CONFIRM_YES, Flow, Steps, Turn
from core.credentials.compose import format_date
from core.storage.models import LIVE_STATES
from core.students.eligibility import Policy

__all__ = ["do_renew", "els_situation", "offer_renew"]


def els_situation(turn: Turn, overview: ops.Overview, credential: ops.CredentialView | None) -> str:
    """ELS policy: where the student stands on the way to the next semester's credential."""
    reason = overview.replacement_reason
    valid_until = format_date(credential.valid_until) if credential else ""
    els_until = format_date(overview.els_valid_until) if overview.els_valid_until else ""
    if overview.replacement_possible and overview.replacement_until:
        return turn.t("renew.els_replace_now", els_valid_until=els_until,
                      until=format_date(overview.replacement_until))
    if credential is None or credential.state not in LIVE_STATES:
        return turn.t("renew.els_none")
    if credential.state != "active":
        return turn.t(f"request.already_{credential.state}")
    if reason == "too_early" and overview.replacement_opens_on:
        return turn.t("renew.els_too_early", valid_until=valid_until,
                      opens_on=format_date(overview.replacement_opens_on))
    if reason == "els_not_extended":
        return turn.t("renew.els_not_extended", valid_until=valid_until, els_valid_until=els_until)
    return turn.t("renew.not_eligible")


def _explain_els_renewal(turn: Turn, overview: ops.Overview) -> None:
    """/renew under the ELS policy: never renewed; a new application once the card is extended."""
    credential = overview.credential
    text = turn.t("renew.els_apply_again") + "\n\n" + els_situation(turn, overview, credential)
    live = credential is not None and credential.state in LIVE_STATES
    if overview.replacement_possible or not live:
        turn.say_text(text, [[("request", "menu:request")], [("status", "menu:status")]])
        return
    turn.say_text(text, [[("status", "menu:status")]])


def offer_renew(turn: Turn) -> Steps:
    overview = yield from load_overview(turn)
    if overview is None:
        return
    turn.state.step = Step.MENU
    if overview.ineligible and not overview.renewal_possible:
        # Not "apply if you have none": they may not have one at all, and hear why.
        turn.say_text(turn.t("renew.ineligible") + "\n\n" + ineligible_text(turn.t, overview.ineligible),
                      [[("status", "menu:status")]])
        return
    if turn.config.policy == Policy.ELS:
        _explain_els_renewal(turn, overview)
        return
    if not overview.renewal_possible or overview.renewal_until is None:
        valid_until = format_date(overview.credential.valid_until) if overview.credential else ""
        opens_on = format_date(overview.renewal_opens_on) if overview.renewal_opens_on else ""
        turn.say(f"renew.{overview.renewal_reason}", [[("status", "menu:status")]], valid_until=valid_until,
                 opens_on=opens_on)
        return
    turn.state.step = Step.CONFIRM_RENEW
    turn.say("renew.confirm", [[("confirm", f"{CONFIRM_YES}renew"), ("cancel", "confirm:no")]],
             until=format_date(overview.renewal_until))


def do_renew(turn: Turn) -> Flow:
    assert turn.state.student_id is not None
    result = yield ops.RenewCredential(turn.state.student_id, turn.lang)
    if result.error == "els_apply_again":
        # A renewal confirmed before the ELS policy was in force: say what to do instead.
        yield from offer_renew(turn)
        return []
    if not result.ok or result.credential is None:
        service_error(turn, result)
        return []
    turn.say("renew.done", [[("status", "menu:status")]], valid_until=format_date(result.credential.valid_until))
    return []
