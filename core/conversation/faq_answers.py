"""Questions answered from the FAQ in any step: the entry a text asks about, and its answer with
the button of the action it is about (only once the chat is bound to a student)."""

from __future__ import annotations

from core.conversation.turn import Buttons, Turn
from core.support.faq import FaqMatch

__all__ = ["IDENTITY_NUMBERS", "answer_faq", "faq_match", "say_entry"]

# The entry on where the PESEL and the album (or ELS) number are found: identification falls back on it.
IDENTITY_NUMBERS = "identity_numbers"


def faq_match(turn: Turn) -> FaqMatch | None:
    """The FAQ entry the student's text asks about, answered in the language it is typed in."""
    if turn.event.kind != "text":
        return None
    understood = turn.understood
    entry = turn.config.faq.entry_for(understood, understood.language)
    if entry is None:
        entry = turn.config.faq.entry_for(understood, turn.lang)
    return FaqMatch(entry, understood) if entry is not None else None


def answer_faq(turn: Turn, *, allow_personal: bool) -> bool:
    match = faq_match(turn)
    if match is None:
        return False
    entry = match.entry
    if entry.personal and not allow_personal:
        turn.say("identify.first")
        return True
    buttons: Buttons = []
    # The answer and its button under the policy in force: under the ELS policy "renewal" is a new application.
    action = entry.action_for(turn.config.policy)
    if allow_personal and action in ("status", "request", "renew", "revoke", "help"):
        action_label = {"status": "status", "request": "request", "renew": "renew", "revoke": "revoke",
                        "help": "activation_help"}[action]
        buttons.append([(action_label, f"menu:{action}")])
    if allow_personal:
        buttons.append([("support", "menu:support")])
    turn.say_text(entry.answer_for(turn.config.policy), buttons or None)
    return True


def say_entry(turn: Turn, entry_id: str) -> bool:
    """Say one entry's answer (under the policy in force) in the chat's language; False when the
    installation's FAQ has no such entry."""
    entry = turn.config.faq.get(turn.lang, entry_id)
    if entry is None:
        return False
    turn.say_text(entry.answer_for(turn.config.policy), None)
    return True
