"""What each step asks: said when the step is entered, and again whenever the student's answer
was not one (so no input ends in a dead end)."""

from __future__ import annotations

from core.conversation.actions.revocation import offer_revoke
from core.conversation.events import Reply, ReplyButton
from core.conversation.overview import menu
from core.conversation.turn import CONFIRM_YES, Steps, Turn

__all__ = ["ask_forget", "ask_language", "confirm_labels", "prompt", "show_terms"]


def ask_language(turn: Turn) -> None:
    turn.replies.append(Reply(
        text=turn.t("language.choose"),
        buttons=[[ReplyButton("Polski", "lang:pl"), ReplyButton("English", "lang:en")]],
    ))


def show_terms(turn: Turn) -> None:
    terms = turn.config.terms
    turn.say_text(
        turn.t("terms.prompt", version=terms.version, summary=terms.summary[turn.lang]),
        [[("accept", "terms:accept"), ("decline", "terms:decline")], [("terms_full", "terms:full")]],
    )


def ask_forget(turn: Turn) -> None:
    """/forget's question: nothing is deleted before a yes."""
    turn.state.step = "confirm_forget"
    turn.say("forget.confirm", [[("forget_yes", "forget:yes"), ("cancel", "cancel")]])


def confirm_labels(what: str) -> tuple[str, str]:
    """The labels of the yes and no buttons of a confirmation (a re-prompt names the same ones)."""
    if what == "support":
        return "send_to_staff", "no"
    return ("revoke_yes" if what == "revoke" else "confirm"), "cancel"


def prompt(turn: Turn) -> Steps:
    """Say again what the current step expects."""
    state = turn.state
    if state.step in ("new", "language"):
        ask_language(turn)
    elif state.step == "terms":
        show_terms(turn)
    elif state.step == "declined":
        turn.say("terms.declined_help", [[("terms_review", "terms:review")]])
    elif state.step == "pesel":
        turn.say("identify.ask_pesel")
    elif state.step == "second_id":
        turn.say("identify.ask_els" if turn.config.policy == "els" else "identify.ask_album")
    elif state.step == "code":
        turn.say("identify.ask_code", [[("resend_code", "code:resend")]])
    elif state.step == "support_text":
        turn.say("support.ask")
    elif state.step in ("confirm_request", "confirm_replace", "confirm_renew", "confirm_revoke", "confirm_support"):
        what = state.step.removeprefix("confirm_")
        yes, no = confirm_labels(what)
        # Names what waits for the answer: "Potwierdzasz?" alone says nothing after another question.
        key = f"confirm.again_{what}"
        params = {"reason": turn.t(f"revoke.because.{state.revoke_reason or 'student_request'}")}
        turn.say(key if turn.config.catalog.has(turn.lang, key) else "confirm.buttons",
                 [[(yes, f"{CONFIRM_YES}{what}"), (no, "confirm:no")]], **params)
    elif state.step == "confirm_forget":
        ask_forget(turn)
    elif state.step == "revoke_reason":
        yield from offer_revoke(turn)
    else:
        yield from menu(turn)
