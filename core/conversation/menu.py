"""The bound menu: a student the chat knows chooses what to do (status, apply, renew, revoke,
activation help, a question for staff), answers the confirmation pending, or types freely.

Every action that changes something is confirmed first; the confirmation a step waits for is
answered here, whatever other question is asked meanwhile.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from core.conversation import ops
from core.conversation.actions.apply import offer_request
from core.conversation.actions.renewal import offer_renew
from core.conversation.actions.revocation import choose_revoke_reason, offer_revoke
from core.conversation.actions.support import support_text
from core.conversation.confirmations import CONFIRMATIONS, NO_BUTTON, Confirmation
from core.conversation.faq_answers import answer_faq
from core.conversation.intents import OFFERED_INTENTS, act_on_intent
from core.conversation.leaving import cancel, confirm_forget
from core.conversation.overview import show_status
from core.conversation.prompts import prompt
from core.conversation.state import Step
from core.conversation.turn import INTENT_BUTTON, Buttons, Steps, Turn
from core.security.redact import redact_personal

__all__ = ["BOUND_STEPS", "bound"]

ACTIVATION_STEPS = 9
# The steps of a chat bound to a student; any other step in a bound chat is taken as the menu.
BOUND_STEPS = frozenset({
    Step.MENU, Step.CONFIRM_REQUEST, Step.CONFIRM_REPLACE, Step.CONFIRM_RENEW, Step.REVOKE_REASON,
    Step.CONFIRM_REVOKE, Step.HELP_STEPS, Step.SUPPORT_TEXT, Step.CONFIRM_SUPPORT, Step.CONFIRM_FORGET,
})


# Below this, a candidate meaning of unclear text is not offered as a button (_likely_meanings).
MIN_OFFERED_LIKELIHOOD = 0.1


def bound(turn: Turn) -> Steps:
    state, button = turn.state, turn.button
    step_name = state.step if state.step in BOUND_STEPS else Step.MENU
    state.step = step_name

    if (yield from _menu_choice(turn)):
        return
    if button.startswith(INTENT_BUTTON):  # one of the likeliest meanings, offered as a button
        state.support_draft = None
        state.step = Step.MENU
        yield from act_on_intent(turn, button.removeprefix(INTENT_BUTTON))
        return
    if turn.intent in ("revoke_lost_phone", "new_phone") and step_name not in (Step.SUPPORT_TEXT, Step.CONFIRM_REVOKE):
        # The lost phone is heard in every step: whatever was pending, its confirmation comes first.
        state.support_draft = None
        yield from act_on_intent(turn, turn.intent)
        return
    if (yield from _pending_step(turn, step_name)):
        return
    yield from _free_input(turn)


def _menu_choice(turn: Turn) -> Generator[ops.Op, Any, bool]:
    """A menu command or button, in any bound step; False when the input is none."""
    state, command, button = turn.state, turn.command, turn.button
    if command in ("status", "start", "menu") or button == "menu:status":
        state.step = Step.MENU
        yield from show_status(turn)
    elif command in ("request", "apply", "wniosek") or button == "menu:request":
        yield from offer_request(turn)
    elif command in ("renew", "przedluz") or button == "menu:renew":
        yield from offer_renew(turn)
    elif command in ("revoke", "uniewaznij") or button == "menu:revoke":
        yield from offer_revoke(turn)
    elif command in ("help", "pomoc") or button == "menu:help":
        state.step = Step.MENU
        if command:  # the "How to activate" button asks only about activation
            turn.say("help.commands")
        turn.say("help.choose", [[("steps_one", "help:step"), ("steps_all", "help:all")], [("menu", "menu:status")]])
    elif button == "help:all":
        state.step = Step.MENU
        turn.say("activation.steps_all", [[("menu", "menu:status")]])
    elif button in ("help:step", "help:next"):
        _activation_step(turn, first=button == "help:step")
    elif command in ("support", "pomoc_czlowiek") or button == "menu:support":
        state.step = Step.SUPPORT_TEXT
        turn.say("support.ask")
    else:
        return False
    return True


def _activation_step(turn: Turn, *, first: bool) -> None:
    """The activation in the app, one step a message, then back to the menu."""
    state = turn.state
    state.help_step = 1 if first else state.help_step + 1
    if state.help_step > ACTIVATION_STEPS:
        state.help_step = 0
        state.step = Step.MENU
        turn.say("activation.done", [[("menu", "menu:status")]])
        return
    state.step = Step.HELP_STEPS
    turn.say(f"activation.step{state.help_step}", [[("next", "help:next"), (Step.MENU, "menu:status")]],
             n=state.help_step, total=ACTIVATION_STEPS)


def _pending_step(turn: Turn, step_name: Step) -> Generator[ops.Op, Any, bool]:
    """The answer to what the step waits for; False in the menu and the activation steps."""
    if step_name in CONFIRMATIONS:
        yield from _confirm(turn, CONFIRMATIONS[step_name])
    elif step_name == Step.REVOKE_REASON:
        if turn.button == NO_BUTTON:
            yield from cancel(turn)
        else:
            yield from choose_revoke_reason(turn)
    elif step_name == Step.SUPPORT_TEXT:
        yield from support_text(turn)
    elif step_name == Step.CONFIRM_FORGET:
        yield from confirm_forget(turn)
    else:
        return False
    return True


def _free_input(turn: Turn) -> Steps:
    """Nothing pending: a command or button not known here, an intent, a FAQ question, or else a
    question for staff, offered with the likeliest meanings."""
    if turn.event.kind == "command":
        turn.say("unknown_command")
        yield from prompt(turn)
        return
    if turn.event.kind == "button":
        yield from show_status(turn)  # a stale button from an older message
        return
    if turn.intent not in ("", "out_of_scope"):
        yield from act_on_intent(turn, turn.intent)
        return
    if answer_faq(turn, allow_personal=True):
        return
    # Kept in the conversation's state until confirmed: never with a PESEL or a code in clear.
    turn.state.support_draft = redact_personal(turn.text)
    turn.state.step = Step.CONFIRM_SUPPORT
    likely = _likely_meanings(turn.understood.candidates)
    _offer_meanings(turn, likely, "understand.options" if likely else "support.offer")


def _likely_meanings(candidates: tuple[tuple[str, float], ...]) -> list[str]:
    """Up to three meanings worth a button: a meaning the understanding gives less than one chance in
    ten ("what it is" for a question on dormitory fees) only misleads."""
    return [intent for intent, likelihood in candidates
            if intent in OFFERED_INTENTS and likelihood >= MIN_OFFERED_LIKELIHOOD][:3]


def _offer_meanings(turn: Turn, likely: list[str], key: str) -> None:
    """The likeliest meanings as buttons, then "send it to staff" and "no"."""
    rows: Buttons = [[(f"intent_{intent}", f"{INTENT_BUTTON}{intent}")] for intent in likely]
    rows.extend(CONFIRMATIONS[Step.CONFIRM_SUPPORT].buttons)
    turn.say(key, rows, send=turn.t("button.send_to_staff"), no=turn.t("button.no"))


def _confirm(turn: Turn, confirmation: Confirmation) -> Steps:
    """Yes, no, or ask again. Only this confirmation's own yes button is a yes (CONFIRMATIONS)."""
    answer = turn.yes_no()
    if confirmation.draft and turn.intent == "human":  # "a person, please": that is a yes here
        answer = True
    elif confirmation.draft and answer is True and turn.event.kind == "text":
        # A typed "tak" to "is it one of these?" is not "send it to staff": which one, then. (A
        # typed "nie" is the "Nie" button: nothing is sent.)
        likely = _likely_meanings(turn.config.faq.understand(turn.state.support_draft or "", turn.lang).candidates)
        if len(likely) == 1:  # the one meaning offered: as if its button was pressed
            turn.state.support_draft = None
            turn.state.step = Step.MENU
            yield from act_on_intent(turn, likely[0])
            return
        if likely:
            _offer_meanings(turn, likely, "understand.which")
            return
    if turn.button == confirmation.yes_data or answer is True:
        turn.state.step = Step.MENU
        replies = yield from confirmation.action(turn)
        turn.replies.extend(replies)
        return
    if turn.button == NO_BUTTON or answer is False:
        yield from cancel(turn)
        return
    step_name = turn.state.step
    if turn.event.kind == "text" and turn.intent not in ("", "out_of_scope") and not confirmation.draft:
        # Another question while a confirmation waits: answered, then the same question again.
        yield from act_on_intent(turn, turn.intent, answer_only=True)
        turn.state.step = step_name
        yield from prompt(turn)
        return
    if confirmation.draft and turn.event.kind == "text" and turn.intent not in ("", "out_of_scope"):
        # Instead of sending the draft, the student said what they meant.
        turn.state.support_draft = None
        turn.state.step = Step.MENU
        yield from act_on_intent(turn, turn.intent)
        return
    turn.say("confirm.expected", yes=turn.t(f"button.{confirmation.yes}"), no=turn.t(f"button.{confirmation.no}"))
    yield from prompt(turn)
