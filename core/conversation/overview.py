"""A bound student's overview in the chat: the /status reply, and the menu of what they can do now.

Both start from the overview storage answers; a student gone from the register ends the
conversation here, whatever the student asked.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from core.conversation import ops
from core.conversation.state import Step
from core.conversation.status import ineligible_text, status_lines
from core.conversation.turn import Buttons, Steps, Turn
from core.credentials.compose import format_date
from core.storage.models import LIVE_STATES

__all__ = ["load_overview", "menu", "service_error", "show_status", "status_buttons"]


def load_overview(turn: Turn) -> Generator[ops.Op, Any, ops.Overview | None]:
    assert turn.state.student_id is not None
    overview = yield ops.StudentOverview(turn.state.student_id)
    if overview is None:
        yield ops.ForgetAccount()
        turn.reset_state()
        turn.state.forgotten = True  # ForgetAccount deleted the stored conversation: it must not be saved back
        turn.say("status.student_gone")
        return None
    result: ops.Overview = overview
    return result


def status_buttons(overview: ops.Overview) -> Buttons:
    rows: Buttons = []
    credential = overview.credential
    live = credential is not None and credential.state in LIVE_STATES
    if (not live and not overview.ineligible) or overview.replacement_possible:
        rows.append([("request", "menu:request")])
    if overview.renewal_possible:
        rows.append([("renew", "menu:renew")])
    if live:
        rows.append([("revoke", "menu:revoke")])
    rows.append([("activation_help", "menu:help"), ("support", "menu:support")])
    return rows


def show_status(turn: Turn) -> Steps:
    overview = yield from load_overview(turn)
    if overview is None:
        return
    credential = overview.credential
    after_active = []
    if overview.renewal_possible and overview.renewal_until:
        after_active.append(turn.t("status.renewal_possible", until=format_date(overview.renewal_until)))
    if overview.replacement_possible and overview.replacement_until:
        after_active.append(turn.t("status.replacement_possible", until=format_date(overview.replacement_until)))
    lines = [turn.t("status.hello", first_name=overview.first_name),
             *status_lines(turn.t, credential, email=overview.masked_email, ineligible=overview.ineligible,
                           after_active=after_active)]
    turn.say_text("\n\n".join(lines), status_buttons(overview))


def menu(turn: Turn) -> Steps:
    """The menu with what this student can do now (Apply when they have no credential)."""
    turn.state.step = Step.MENU
    overview = (yield ops.StudentOverview(turn.state.student_id)) if turn.state.student_id else None
    if overview is None:
        turn.say("menu.prompt", [[("status", "menu:status"), ("activation_help", "menu:help")],
                                 [("support", "menu:support")]])
        return
    rows = status_buttons(overview)
    rows[-1] = [("status", "menu:status"), *rows[-1]]
    turn.say("menu.prompt", rows)


def service_error(turn: Turn, result: ops.ServiceResult) -> None:
    """What a refused action says: why the student may not have one, or the error and the status button."""
    if result.reasons:
        turn.say_text(ineligible_text(turn.t, result.reasons))
    else:
        turn.say(f"error.{result.error or 'generic'}", [[("status", "menu:status")]])
