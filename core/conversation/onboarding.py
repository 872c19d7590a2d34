"""The way in: the greeting in both languages, the language, and the terms (accepted, declined,
or accepted again when a new version is in force) before anything personal is asked."""

from __future__ import annotations

from core.conversation import ops
from core.conversation.events import ReplyButton
from core.conversation.faq_answers import answer_faq
from core.conversation.overview import show_status
from core.conversation.prompts import ask_language, prompt, show_full_terms, show_terms
from core.conversation.state import Step
from core.conversation.turn import Steps, Turn

__all__ = ["choose_language", "greet", "language_step", "terms_changed", "terms_step"]

_ACCEPT_WORDS = ("akceptuję", "akceptuje", "accept", "i accept", "tak", "yes")
_DECLINE_WORDS = ("nie akceptuję", "odrzucam", "decline", "no", "nie")


def greet(turn: Turn) -> None:
    hint = turn.event.language_hint
    turn.state.step = Step.LANGUAGE
    if turn.state.language is None and hint in ("pl", "en"):
        turn.state.language = hint
    turn.say_text(
        turn.config.catalog.text("pl", "greeting") + "\n\n" + turn.config.catalog.text("en", "greeting"),
        None,
    )
    ask_language(turn)


def choose_language(turn: Turn, language: str, *, guessed: bool = False) -> Steps:
    if language not in ("pl", "en"):
        ask_language(turn)
        return
    turn.state.language = language
    if guessed:
        turn.say("language.guessed")
    if turn.state.student_id is not None:
        # Before binding the state's choice goes onto the link when it is made; after, the
        # link must follow, or reminders and e-mails keep the old language.
        yield ops.SetLanguage(language)
    if turn.state.step in (Step.NEW, Step.LANGUAGE):
        turn.say("intro")
        turn.state.step = Step.TERMS
        show_terms(turn)
        return
    turn.say("language.set")
    yield from prompt(turn)


def language_step(turn: Turn) -> Steps:
    """Typed instead of tapped: a language's name chooses it; a message written in one language
    ("chcę legitymację", "I need my student ID") is taken in that language, and says how to change
    it. One word that could be either ("start", "ok") is not enough unless it agrees with the
    language the student's app uses; then the question again, with what may be typed."""
    understanding = turn.config.faq.understanding
    typed = turn.event.kind == "text"  # a command (/help) names no language and is written in none
    named = understanding.named_language(turn.text) if typed else None
    if named is not None:
        yield from choose_language(turn, named)
        return
    told = understanding.language(turn.text, "") if typed else ""
    if told and (len(turn.text.split()) > 1 or told == turn.state.language):
        yield from choose_language(turn, told, guessed=True)
        return
    turn.say_text(turn.config.catalog.text("pl", "language.hint"), None)
    ask_language(turn)


def terms_changed(turn: Turn) -> None:
    """A new terms version: nothing more until it is accepted again."""
    turn.state.resume_menu = turn.state.student_id is not None
    turn.state.step = Step.TERMS
    turn.say("terms.changed")
    show_terms(turn)


def terms_step(turn: Turn) -> Steps:
    state, button, text = turn.state, turn.button, turn.text.lower()
    if turn.command in ("help", "pomoc"):
        turn.say("help.terms")
        yield from prompt(turn)
        return
    typed = turn.intent
    if button == "terms:accept" or text in _ACCEPT_WORDS or typed in ("accept_terms", "yes"):
        yield from _accept_terms(turn)
        return
    if button == "terms:full":
        show_full_terms(turn)
        show_terms(turn)
        return
    if button == "terms:decline" or text in _DECLINE_WORDS or typed in ("decline_terms", "no"):
        state.step = Step.DECLINED
        turn.say("terms.declined", [[("terms_review", "terms:review")]])
        return
    if button == "terms:review" or turn.command == "start":
        state.step = Step.TERMS
        show_terms(turn)
        return
    if answer_faq(turn, allow_personal=False):
        if state.step == Step.DECLINED:
            turn.replies[-1].buttons.append([ReplyButton(turn.t("button.terms_review"), "terms:review")])
        else:
            # The question is answered; the terms still wait: no dead end after an answer.
            turn.say("terms.expected", [[("accept", "terms:accept"), ("decline", "terms:decline")],
                                        [("terms_full", "terms:full")]],
                     accept=turn.t("button.accept"), decline=turn.t("button.decline"))
        return
    if state.step == Step.DECLINED:
        turn.say("terms.declined_help", [[("terms_review", "terms:review")]])
        return
    # Not the terms' answer (a PESEL typed too early, a word not understood): say what is expected,
    # in the words of the buttons shown.
    turn.say("terms.expected", accept=turn.t("button.accept"), decline=turn.t("button.decline"))
    show_terms(turn)


def _accept_terms(turn: Turn) -> Steps:
    state = turn.state
    version = turn.config.terms.version
    yield ops.AcceptTerms(version, state.student_id)
    state.terms_version = version
    if state.resume_menu and state.student_id:
        state.resume_menu = False
        state.step = Step.MENU
        turn.say("terms.accepted")
        yield from show_status(turn)
        return
    state.step = Step.PESEL
    turn.say("terms.accepted")
    turn.say("identify.ask_pesel")
