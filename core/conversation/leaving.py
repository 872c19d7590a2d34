"""The two ways out of any step: cancel (back to where the student stood, nothing done) and
forget (after a yes, the chat account's data deleted; the register is not the chat's to delete)."""

from __future__ import annotations

from core.conversation import ops
from core.conversation.prompts import prompt
from core.conversation.state import Step
from core.conversation.turn import Steps, Turn

__all__ = ["cancel", "confirm_forget", "forget"]


def cancel(turn: Turn) -> Steps:
    state = turn.state
    state.revoke_reason = None
    state.support_draft = None
    if state.student_id is not None:
        state.step = Step.MENU
        turn.say("cancelled")
        yield from prompt(turn)  # the menu's buttons, not a dead end
        return
    if state.step in (Step.SECOND_ID, Step.CODE):
        state.step = Step.PESEL
        state.pesel_hash = None
        state.pending_student_id = None
    if state.step == Step.CONFIRM_FORGET:
        state.step = Step.PESEL if state.terms_version else Step.TERMS
    turn.say("cancelled")
    yield from prompt(turn)


def confirm_forget(turn: Turn) -> Steps:
    answer = turn.yes_no()
    if answer is True:
        yield from forget(turn)
    elif answer is False:
        yield from cancel(turn)
    else:  # neither yes nor no: nothing is deleted and nothing is silently cancelled
        turn.say("forget.expected", [[("forget_yes", "forget:yes"), ("cancel", "cancel")]],
                 yes=turn.t("button.forget_yes"), no=turn.t("button.cancel"))


def forget(turn: Turn) -> Steps:
    yield ops.ForgetAccount()
    turn.reset_state()
    turn.state.forgotten = True
    turn.say("forget.done")  # still in the language the student used
