"""The engine's entry: one event in, its replies out, routed by what works in every step and
then by where the student stands (the way in, identification, or the bound menu)."""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

from core.conversation import ops
from core.conversation.events import Event
from core.conversation.identification import identify
from core.conversation.leaving import cancel, confirm_forget, forget
from core.conversation.menu import bound
from core.conversation.onboarding import choose_language, greet, language_step, terms_changed, terms_step
from core.conversation.prompts import ask_forget, ask_language, prompt, show_full_terms
from core.conversation.state import ConversationState, Step
from core.conversation.turn import EngineConfig, Flow, Steps, Turn

__all__ = ["step"]


def step(config: EngineConfig, state: ConversationState, event: Event, now: datetime) -> Flow:
    """Handle one event; mutates `state`, returns the replies."""
    turn = Turn(config, state, event, now)
    yield from _dispatch(turn)
    if not turn.replies:  # every input gets an answer
        turn.say("fallback")
        yield from prompt(turn)
    return turn.replies


def _dispatch(turn: Turn) -> Steps:
    state, command = turn.state, turn.command

    if turn.event.kind == "unsupported":
        turn.say("unsupported")
        yield from prompt(turn)
        return
    if turn.event.kind == "text" and not turn.text:
        turn.say("empty")
        yield from prompt(turn)
        return
    if (yield from _in_every_step(turn)):
        return

    if state.step == Step.NEW or (command == "start" and state.step == Step.LANGUAGE):
        greet(turn)
        return
    if state.step == Step.LANGUAGE:
        yield from language_step(turn)
        return
    if state.step in (Step.TERMS, Step.DECLINED) or not state.terms_version:
        # Also a command in the middle of a /forget asked before the terms were accepted:
        # terms never accepted are not "changed terms".
        yield from terms_step(turn)
        return
    if state.terms_version != turn.config.terms.version:
        terms_changed(turn)
        return
    if state.student_id is None:
        yield from identify(turn)
        return
    yield from bound(turn)


def _in_every_step(turn: Turn) -> Generator[ops.Op, Any, bool]:
    """The commands that work in every step (language, forget, terms, cancel); False for others."""
    state, command, button = turn.state, turn.command, turn.button
    if command in ("language", "jezyk", "lang"):
        ask_language(turn)
    elif button.startswith("lang:"):
        yield from choose_language(turn, button.removeprefix("lang:"))
    elif command == "forget":
        if state.step == Step.NEW:
            turn.say("forget.nothing")
        else:
            ask_forget(turn)
    elif button == "forget:yes" and state.step == Step.CONFIRM_FORGET:
        yield from forget(turn)
    elif command == Step.TERMS and state.step not in (Step.NEW, Step.LANGUAGE):
        show_full_terms(turn)
    elif command == "cancel" or button == "cancel":
        yield from cancel(turn)
    elif state.step == Step.CONFIRM_FORGET and turn.event.kind == "text":
        yield from confirm_forget(turn)
    else:
        return False
    return True
