"""What a bound student's typed intent (core.understanding) leads to: the confirmation of an action
(as its button would; never the action itself), the menu's answers, or the FAQ's."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from core.conversation import ops
from core.conversation.actions.apply import offer_request
from core.conversation.actions.renewal import offer_renew
from core.conversation.actions.revocation import offer_revoke
from core.conversation.faq_answers import answer_faq
from core.conversation.overview import menu, show_status
from core.conversation.prompts import ask_forget
from core.conversation.state import Step
from core.conversation.turn import Steps, Turn

__all__ = ["OFFERED_INTENTS", "act_on_intent"]

# Intents offered as buttons when a text is not clearly understood ("intent:<name>").
OFFERED_INTENTS = ("apply", "renew", "revoke", "revoke_lost_phone", "new_phone", "status_validity", "activation_help",
                   "activation_data_missing", "eligibility", "els_card", "mobywatel_app", "about", "human",
                   "forget_data")
# Intents that only say something: nothing is pending for a yes or no to answer.
_SMALL_TALK = ("greeting", "thanks", "cancel", "no", "yes", "accept_terms", "decline_terms")


def act_on_intent(turn: Turn, intent: str, *, answer_only: bool = False) -> Steps:
    """What a bound student's intent leads to: an action's confirmation (as its button would), the
    menu's answers, or the FAQ. `answer_only`: a confirmation is pending, so only answer."""
    if not answer_only and (yield from _act(turn, intent)):
        return
    if intent in _SMALL_TALK:
        turn.say(f"understand.{intent}" if intent in ("greeting", "thanks") else "understand.nothing_pending")
        if not answer_only:
            yield from menu(turn)
        return
    if intent == "els_card":
        turn.say("understand.els_card")
    elif intent == "chat_code_missing":
        turn.say("understand.already_bound")
    else:
        catalog = turn.config.faq.understanding.catalog
        entry_id = turn.understood.faq_entry if turn.intent == intent else catalog.faq_for(intent)
        entry = turn.config.faq.get(turn.lang, entry_id) if entry_id else None
        if entry is None:
            turn.say("understand.nothing_pending")
        elif entry.personal:
            yield from show_status(turn)
            return
        else:
            turn.say_text(entry.answer_for(turn.config.policy))
    if not answer_only:
        yield from menu(turn)


def _act(turn: Turn, intent: str) -> Generator[ops.Op, Any, bool]:
    """The intents that lead somewhere (a confirmation, a question, the status); False for the others."""
    if intent == "apply":
        yield from offer_request(turn)
    elif intent == "renew":
        yield from offer_renew(turn)
        if turn.state.step != Step.CONFIRM_RENEW:  # not possible now: how renewal works, with its button
            answer_faq(turn, allow_personal=True)
    elif intent in ("revoke_lost_phone", "new_phone"):
        yield from offer_revoke(turn, reason="lost_phone" if intent == "revoke_lost_phone" else "new_phone")
    elif intent == "revoke":  # no reason said: the reason's question, as the menu's button asks it
        yield from offer_revoke(turn)
    elif intent == "forget_data":
        ask_forget(turn)
    elif intent == "human":
        turn.state.step = Step.SUPPORT_TEXT
        turn.say("support.ask")
    elif intent == "status_validity":
        yield from show_status(turn)
    elif intent == "activation_help":
        turn.say("help.choose", [[("steps_one", "help:step"), ("steps_all", "help:all")],
                                 [("menu", "menu:status")]])
    else:
        return False
    return True
