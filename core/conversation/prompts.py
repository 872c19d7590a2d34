"""What each step asks: said when the step is entered, and again whenever the student's answer
was not one (so no input ends in a dead end)."""

from __future__ import annotations

from core.conversation.actions.revocation import offer_revoke
from core.conversation.confirmations import CONFIRMATIONS
from core.conversation.events import Reply, ReplyButton
from core.conversation.overview import menu
from core.conversation.state import Step
from core.conversation.turn import Steps, Turn
from core.students.eligibility import Policy

__all__ = ["ask_forget", "ask_language", "prompt", "show_terms"]


def ask_language(turn: Turn) -> None:
    turn.replies.append(Reply(
        text=turn.t("language.choose"),
        buttons=[[ReplyButton("Polski", "lang:pl"), ReplyButton("English", "lang:en")]],
    ))


def show_terms(turn: Turn) -> None:
    terms = turn.config.terms
    turn.say_text(
        turn.t("terms.prompt", version=terms.version, summary=terms.summary_for(turn.lang, turn.config.policy)),
        [[("accept", "terms:accept"), ("decline", "terms:decline")], [("terms_full", "terms:full")]],
    )


def show_full_terms(turn: Turn) -> None:
    """The whole terms under the policy in force, under the catalog's heading (the file has none)."""
    terms = turn.config.terms
    turn.say_text(turn.t("terms.full_heading", version=terms.version) + "\n\n"
                  + terms.full_for(turn.lang, turn.config.policy))


def ask_forget(turn: Turn) -> None:
    """/forget's question: nothing is deleted before a yes."""
    turn.state.step = Step.CONFIRM_FORGET
    turn.say("forget.confirm", [[("forget_yes", "forget:yes"), ("cancel", "cancel")]])


def prompt(turn: Turn) -> Steps:
    """Say again what the current step expects."""
    state = turn.state
    if state.step in (Step.NEW, Step.LANGUAGE):
        ask_language(turn)
    elif state.step == Step.TERMS:
        show_terms(turn)
    elif state.step == Step.DECLINED:
        turn.say("terms.declined_help", [[("terms_review", "terms:review")]])
    elif state.step == Step.PESEL:
        turn.say("identify.ask_pesel")
    elif state.step == Step.SECOND_ID:
        turn.say("identify.ask_els" if turn.config.policy == Policy.ELS else "identify.ask_album")
    elif state.step == Step.CODE:
        turn.say("identify.ask_code", [[("resend_code", "code:resend")]])
    elif state.step == Step.SUPPORT_TEXT:
        turn.say("support.ask")
    elif state.step in CONFIRMATIONS:
        confirmation = CONFIRMATIONS[state.step]
        # Names what waits for the answer: "Potwierdzasz?" alone says nothing after another question.
        key = confirmation.again
        params = {"reason": turn.t(f"revoke.because.{state.revoke_reason or 'student_request'}"),
                  "yes": turn.t(f"button.{confirmation.yes}"), "no": turn.t(f"button.{confirmation.no}")}
        turn.say(key if turn.config.catalog.has(turn.lang, key) else "confirm.buttons", confirmation.buttons,
                 **params)
    elif state.step == Step.CONFIRM_FORGET:
        ask_forget(turn)
    elif state.step == Step.REVOKE_REASON:
        yield from offer_revoke(turn)
    else:
        yield from menu(turn)
