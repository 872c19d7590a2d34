"""The conversation engine: the student's whole journey as a pure state machine.

`step(config, state, event, now)` is a generator: it yields storage requests
(`core.conversation.ops`) and is sent their answers, and finally returns the replies.
It does no I/O and reads no clock of its own, so Telegram, the console, e-mail and
tests all drive the same journey:

    new ─▶ language ─▶ terms ─accept─▶ pesel ─▶ second_id ─▶ code ─▶ menu
                         │ decline                                   │
                         ▼                                           ├─ confirm_request
                      declined (help only)                           ├─ confirm_renew (stand-alone policy)
                                                                     ├─ confirm_replace (ELS policy)
                                                                     ├─ revoke_reason ─▶ confirm_revoke
                                                                     ├─ help_steps
                                                                     ├─ support_text / confirm_support
                                                                     └─ confirm_forget
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from babel.units import format_unit

from core.app.catalog import Catalog
from core.app.clock import WARSAW
from core.conversation import ops
from core.conversation.events import Event, Reply, ReplyButton
from core.conversation.state import ConversationState
from core.conversation.status import ineligible_text, status_lines
from core.conversation.terms import Terms
from core.credentials.compose import format_date, format_datetime
from core.security.redact import redact_personal
from core.students.eligibility import normalize_els_number
from core.students.pesel import check_pesel
from core.support.faq import Faq, FaqMatch
from core.understanding import Understood

__all__ = ["EngineConfig", "Flow", "step"]

Flow = Generator[ops.Op, Any, list[Reply]]
ACTIVATION_STEPS = 9
REVOKE_REASONS = ("lost_phone", "new_phone", "student_request")
# A yes button's data is this plus what it confirms ("request", "replace", "renew", "revoke", "support").
CONFIRM_YES = "confirm:yes:"
# Digits in the one-time code e-mailed to bind a chat account (core.conversation.runner makes them).
CHAT_CODE_LENGTH = 6
# FAQ entries that, asked while the chat code is awaited, are about that code: no activation
# data exists yet, /status is refused before binding, and the code lives minutes, not 30 days.
CHAT_CODE_QUESTIONS = frozenset({"email_not_arrived", "code_expired"})
BOUND_STEPS = {
    "menu", "confirm_request", "confirm_replace", "confirm_renew", "revoke_reason", "confirm_revoke",
    "help_steps", "support_text", "confirm_support", "confirm_forget",
}
# Answers to a yes/no question typed instead of pressing a button ("t"/"n" as on Polish forms).
YES_WORDS = frozenset({"tak", "t", "yes", "y", "ok", "okay", "potwierdzam", "confirm"})
NO_WORDS = frozenset({"nie", "n", "no", "anuluj", "cancel"})
# Typed intents (core.understanding) that answer a yes/no question, and the ones that change something:
# each of those leads to the same confirmation as its button, never straight to the action.
YES_INTENTS = frozenset({"yes", "accept_terms"})
NO_INTENTS = frozenset({"no", "decline_terms", "cancel"})
# Intents offered as buttons when a text is not clearly understood ("intent:<name>").
OFFERED_INTENTS = ("apply", "renew", "revoke_lost_phone", "new_phone", "status_validity", "activation_help",
                   "activation_data_missing", "eligibility", "els_card", "mobywatel_app", "about", "human",
                   "forget_data")
INTENT_BUTTON = "intent:"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\ufeff]")


@dataclass(frozen=True)
class EngineConfig:
    """What the engine knows besides the state: texts, FAQ, terms and the rules in force."""

    catalog: Catalog
    faq: Faq
    terms: Terms
    policy: str
    pesel_hasher: Callable[[str], str]
    default_language: str = "pl"
    chat_code_ttl_minutes: int = 15
    activation_window_days: int = 30
    max_text: int = 4000


def clean_text(raw: str, limit: int) -> tuple[str, bool]:
    """Control and invisible characters out, NFC, length capped; says if it was cut."""
    text = _CONTROL.sub("", unicodedata.normalize("NFC", raw.replace("\r\n", "\n"))).strip()
    return (text[:limit], True) if len(text) > limit else (text, False)


class Turn:
    """One event being handled: the state, the replies so far, and text helpers."""

    def __init__(self, config: EngineConfig, state: ConversationState, event: Event, now: datetime) -> None:
        self.config = config
        self.state = state
        self.event = event
        self.now = now
        self.replies: list[Reply] = []
        self.text, self.truncated = clean_text(event.text, config.max_text)
        self.spoken: str | None = None  # the language of this turn's replies once the state is wiped
        self._understood: Understood | None = None

    # --- saying things -------------------------------------------------------------------
    @property
    def lang(self) -> str:
        return self.state.language or self.spoken or self.config.default_language

    def t(self, key: str, **params: Any) -> str:
        """The text of `key` in the student's language, as the issuing policy in force words it."""
        return self.config.catalog.text(self.lang, self.policy_key(key), **params)

    def say(self, key: str, buttons: list[list[tuple[str, str]]] | None = None, **params: Any) -> None:
        self.say_text(self.t(key, **params), buttons)

    def policy_key(self, key: str) -> str:
        """`key` as the issuing policy in force words it: `<key>_<policy>` when the catalog has one
        (e.g. `intro_els`: under the ELS policy nothing is renewed), else `key` itself. Every text
        the chat says goes through here, so an installation words any key per policy in its own
        catalog file, without code (docs/texts.md)."""
        specific = f"{key}_{self.config.policy}"
        return specific if self.config.catalog.has(self.lang, specific) else key

    def say_text(self, text: str, buttons: list[list[tuple[str, str]]] | None = None) -> None:
        rows = [[ReplyButton(self.t(f"button.{label}"), data) for label, data in row] for row in buttons or []]
        self.replies.append(Reply(text=text, buttons=rows))

    def when(self, moment: datetime) -> str:
        return format_datetime(moment)

    def days(self, count: int) -> str:
        return days_text(count, self.lang)

    # --- input -----------------------------------------------------------------------------
    @property
    def button(self) -> str:
        return self.event.text if self.event.kind == "button" else ""

    @property
    def command(self) -> str:
        return self.event.command

    @property
    def understood(self) -> Understood:
        """What the typed text means (core.understanding), worked out once per turn."""
        if self._understood is None:
            self._understood = self.config.faq.understand(self.text, self.lang)
        return self._understood

    @property
    def intent(self) -> str:
        """The intent of typed text ("" for a button or a command); out_of_scope when unclear."""
        return self.understood.intent if self.event.kind == "text" and self.text else ""

    def yes_no(self) -> bool | None:
        """A typed yes (True) or no (False); None for anything else."""
        if self.event.kind != "text":
            return None
        word = self.text.lower().strip(" .!")
        if word in YES_WORDS:
            return True
        if word in NO_WORDS:
            return False
        intent = self.intent
        return True if intent in YES_INTENTS else False if intent in NO_INTENTS else None

    def reset_state(self) -> None:
        """Wipe the conversation; the rest of this turn still answers in the student's language."""
        self.spoken = self.lang
        self.state.__init__()  # type: ignore[misc]


def days_text(count: int, language: str) -> str:
    """`count` days in words with the language's plural form (CLDR, through Babel): "1 dzień",
    "2 dni", "5 dni", "22 dni", "1 day", "30 days"."""
    return format_unit(count, "duration-day", locale=language, length="long")


def step(config: EngineConfig, state: ConversationState, event: Event, now: datetime) -> Flow:
    """Handle one event; mutates `state`, returns the replies."""
    turn = Turn(config, state, event, now)
    yield from _dispatch(turn)
    if not turn.replies:  # every input gets an answer
        turn.say("fallback")
        yield from _prompt(turn)
    return turn.replies


def _dispatch(turn: Turn) -> Generator[ops.Op, Any, None]:
    state, command, button = turn.state, turn.command, turn.button

    if turn.event.kind == "unsupported":
        turn.say("unsupported")
        yield from _prompt(turn)
        return
    if turn.event.kind == "text" and not turn.text:
        turn.say("empty")
        yield from _prompt(turn)
        return

    # Commands that work in every step.
    if command in ("language", "jezyk", "lang"):
        _ask_language(turn)
        return
    if button.startswith("lang:"):
        yield from _choose_language(turn, button.removeprefix("lang:"))
        return
    if command == "forget":
        if state.step == "new":
            turn.say("forget.nothing")
            return
        state.step = "confirm_forget"
        turn.say("forget.confirm", [[("forget_yes", "forget:yes"), ("cancel", "cancel")]])
        return
    if button == "forget:yes" and state.step == "confirm_forget":
        yield from _forget(turn)
        return
    if command == "terms" and state.step not in ("new", "language"):
        _show_full_terms(turn)
        return
    if command == "cancel" or button == "cancel":
        yield from _cancel(turn)
        return
    if state.step == "confirm_forget" and turn.event.kind == "text":
        yield from _confirm_forget(turn)
        return

    if state.step == "new" or (command == "start" and state.step == "language"):
        _greet(turn)
        return
    if state.step == "language":
        yield from _language_step(turn)
        return
    if state.step in ("terms", "declined") or not state.terms_version:
        # Also a command in the middle of a /forget asked before the terms were accepted:
        # terms never accepted are not "changed terms".
        yield from _terms_step(turn)
        return
    if state.terms_version != turn.config.terms.version:
        # A new terms version: nothing more until it is accepted again.
        state.resume_menu = state.student_id is not None
        state.step = "terms"
        turn.say("terms.changed")
        _show_terms(turn)
        return
    if state.student_id is None:
        yield from _identify(turn)
        return
    yield from _bound(turn)


# --- greeting, language, terms -------------------------------------------------------------

def _greet(turn: Turn) -> None:
    hint = turn.event.language_hint
    turn.state.step = "language"
    if turn.state.language is None and hint in ("pl", "en"):
        turn.state.language = hint
    turn.say_text(
        turn.config.catalog.text("pl", "greeting") + "\n\n" + turn.config.catalog.text("en", "greeting"),
        None,
    )
    _ask_language(turn)


def _ask_language(turn: Turn) -> None:
    turn.replies.append(Reply(
        text=turn.t("language.choose"),
        buttons=[[ReplyButton("Polski", "lang:pl"), ReplyButton("English", "lang:en")]],
    ))


def _choose_language(turn: Turn, language: str) -> Generator[ops.Op, Any, None]:
    if language not in ("pl", "en"):
        _ask_language(turn)
        return
    turn.state.language = language
    if turn.state.student_id is not None:
        # Before binding the state's choice goes onto the link when it is made; after, the
        # link must follow, or reminders and e-mails keep the old language.
        yield ops.SetLanguage(language)
    if turn.state.step in ("new", "language"):
        turn.say("intro")
        turn.state.step = "terms"
        _show_terms(turn)
        return
    turn.say("language.set")
    yield from _prompt(turn)


def _language_step(turn: Turn) -> Generator[ops.Op, Any, None]:
    folded = turn.text.lower()
    if folded in ("pl", "polski", "polish", "po polsku"):
        yield from _choose_language(turn, "pl")
    elif folded in ("en", "english", "angielski", "ang"):
        yield from _choose_language(turn, "en")
    else:
        _ask_language(turn)


def _show_terms(turn: Turn) -> None:
    terms = turn.config.terms
    turn.say_text(
        turn.t("terms.prompt", version=terms.version, summary=terms.summary_for(turn.lang, turn.config.policy)),
        [[("accept", "terms:accept"), ("decline", "terms:decline")], [("terms_full", "terms:full")]],
    )


def _show_full_terms(turn: Turn) -> None:
    """The whole terms under the policy in force, under the catalog's heading (the file has none)."""
    terms = turn.config.terms
    turn.say_text(turn.t("terms.full_heading", version=terms.version) + "\n\n"
                  + terms.full_for(turn.lang, turn.config.policy))


def _terms_step(turn: Turn) -> Generator[ops.Op, Any, None]:
    state, button, text = turn.state, turn.button, turn.text.lower()
    version = turn.config.terms.version
    if turn.command in ("help", "pomoc"):
        turn.say("help.terms")
        yield from _prompt(turn)
        return
    typed = turn.intent
    if button == "terms:accept" or text in ("akceptuję", "akceptuje", "accept", "i accept", "tak", "yes") \
            or typed in ("accept_terms", "yes"):
        yield ops.AcceptTerms(version, state.student_id)
        state.terms_version = version
        if state.resume_menu and state.student_id:
            state.resume_menu = False
            state.step = "menu"
            turn.say("terms.accepted")
            yield from _show_status(turn)
            return
        state.step = "pesel"
        turn.say("terms.accepted")
        turn.say("identify.ask_pesel")
        return
    if button == "terms:full":
        _show_full_terms(turn)
        _show_terms(turn)
        return
    if button == "terms:decline" or text in ("nie akceptuję", "odrzucam", "decline", "no", "nie") \
            or typed in ("decline_terms", "no"):
        state.step = "declined"
        turn.say("terms.declined", [[("terms_review", "terms:review")]])
        return
    if button == "terms:review" or turn.command == "start":
        state.step = "terms"
        _show_terms(turn)
        return
    if _answer_faq(turn, allow_personal=False):
        if state.step == "declined":
            turn.replies[-1].buttons.append([ReplyButton(turn.t("button.terms_review"), "terms:review")])
        else:
            # The question is answered; the terms still wait: no dead end after an answer.
            turn.say("terms.expected", [[("accept", "terms:accept"), ("decline", "terms:decline")],
                                        [("terms_full", "terms:full")]],
                     accept=turn.t("button.accept"), decline=turn.t("button.decline"))
        return
    if state.step == "declined":
        turn.say("terms.declined_help", [[("terms_review", "terms:review")]])
        return
    # Not the terms' answer (a PESEL typed too early, a word not understood): say what is expected,
    # in the words of the buttons shown.
    turn.say("terms.expected", accept=turn.t("button.accept"), decline=turn.t("button.decline"))
    _show_terms(turn)


# --- identification before binding ----------------------------------------------------------

def _locked(turn: Turn, until: datetime | None) -> bool:
    if until is None:
        return False
    turn.say("identify.locked", until=turn.when(until))
    return True


def _identify(turn: Turn) -> Generator[ops.Op, Any, None]:
    state = turn.state
    if turn.command in ("status", "renew", "revoke", "request", "apply", "support", "menu"):
        turn.say("identify.first")
        yield from _prompt(turn)
        return
    if turn.command in ("help", "pomoc"):
        turn.say("help.before_binding")
        yield from _prompt(turn)
        return
    if turn.command == "start":
        yield from _prompt(turn)
        return
    if turn.event.kind == "command":
        turn.say("unknown_command")
        yield from _prompt(turn)
        return
    if state.step == "pesel":
        yield from _pesel_step(turn)
    elif state.step == "second_id":
        yield from _second_id_step(turn)
    elif state.step == "code":
        yield from _code_step(turn)
    else:
        state.step = "pesel"
        yield from _prompt(turn)


def _looks_like_question(text: str) -> bool:
    return sum(ch.isalpha() for ch in text) >= 4


def _pesel_step(turn: Turn) -> Generator[ops.Op, Any, None]:
    if turn.event.kind != "text":
        yield from _prompt(turn)
        return
    if _looks_like_question(turn.text) and _answer_faq(turn, allow_personal=False):
        turn.say("identify.ask_pesel")
        return
    if _locked(turn, (yield ops.CheckLocked("identify"))):
        return
    number, problem = check_pesel(turn.text)
    if problem is not None or number is None:
        turn.say(f"identify.{problem}")
        return
    turn.state.pesel_hash = turn.config.pesel_hasher(number)
    turn.state.step = "second_id"
    turn.say("identify.ask_els" if turn.config.policy == "els" else "identify.ask_album")


def _second_id_step(turn: Turn) -> Generator[ops.Op, Any, None]:
    state = turn.state
    if turn.event.kind != "text" or state.pesel_hash is None:
        state.step = "pesel" if state.pesel_hash is None else state.step
        yield from _prompt(turn)
        return
    second = re.sub(r"\s+", "", turn.text).upper()
    # An ELS number is compared without its "ELS" prefix and dashes: only that prefix is no number.
    significant = normalize_els_number(second) if turn.config.policy == "els" else second
    if not significant or len(second) > 40:
        turn.say("identify.second_format")
        return
    by = "els" if turn.config.policy == "els" else "album"
    # Counted against the typed number (and so its student) too, not only the typed PESEL:
    # otherwise PESELs tried against one known album from many accounts are each a first
    # guess. Checked before matching, so a locked student is refused even the right data.
    keys: tuple[str, ...] = tuple((yield ops.IdentifyKeys(state.pesel_hash, second, by)) or ())
    if _locked(turn, (yield ops.CheckLocked("identify", state.pesel_hash, also=keys))):
        return
    student_id = yield ops.MatchStudent(state.pesel_hash, second, by)
    if student_id is None:
        until = yield ops.RecordWrongGuess("identify", state.pesel_hash, also=keys)
        state.pesel_hash = None
        state.step = "pesel"
        # The same words whether the PESEL is unknown or the second number is wrong.
        turn.say("identify.no_match")
        if not _locked(turn, until):
            turn.say("identify.ask_pesel")
        return
    state.pesel_hash = None
    state.pending_student_id = student_id
    state.step = "code"
    # Identifying again (another account, after /forget) mails a code too: the same cap as the
    # resend button, or knowing a PESEL and an album would be enough to flood the inbox.
    until = yield ops.CheckResend(student_id)
    if until is not None:
        turn.say("identify.resend_limited", until=turn.when(until))
        return
    masked = yield ops.SendBindingCode(student_id, turn.lang)
    turn.say("identify.code_sent", email=masked, minutes=turn.config.chat_code_ttl_minutes,
             buttons=None)


def _code_step(turn: Turn) -> Generator[ops.Op, Any, None]:
    state = turn.state
    if turn.button == "code:resend" and state.pending_student_id:
        if _locked(turn, (yield ops.CheckLocked("chat_code", f"student:{state.pending_student_id}"))):
            return
        # Each press mails the student's university inbox: not a button to flood it with.
        until = yield ops.CheckResend(state.pending_student_id)
        if until is not None:
            turn.say("identify.resend_limited", until=turn.when(until))
            return
        masked = yield ops.SendBindingCode(state.pending_student_id, turn.lang)
        turn.say("identify.code_sent", email=masked, minutes=turn.config.chat_code_ttl_minutes)
        return
    if turn.event.kind != "text":
        yield from _prompt(turn)
        return
    if sum(ch.isdigit() for ch in turn.text) != CHAT_CODE_LENGTH:
        # Not a code at all ("abc", a question, a typo short of a digit): no guess to count.
        if _looks_like_question(turn.text):
            match = _faq_match(turn)
            about_code = turn.intent == "chat_code_missing" or (
                match is not None and match.entry.id in CHAT_CODE_QUESTIONS)
            if about_code and state.pending_student_id:
                email = yield ops.MaskedEmail(state.pending_student_id)
                turn.say("identify.code_help", email=email, minutes=turn.config.chat_code_ttl_minutes)
            else:
                _answer_faq(turn, allow_personal=False)
        turn.say("identify.code_format", [[("resend_code", "code:resend")]], length=CHAT_CODE_LENGTH)
        return
    student_key = f"student:{state.pending_student_id}" if state.pending_student_id else None
    if _locked(turn, (yield ops.CheckLocked("chat_code", student_key))):
        return
    result, student_id = yield ops.VerifyBindingCode(turn.text)
    if result == "ok" and student_id is not None:
        yield ops.BindAccount(student_id, turn.lang)
        state.student_id = student_id
        state.pending_student_id = None
        state.step = "menu"
        turn.say("identify.bound")
        yield from _show_status(turn)
        return
    if result == "expired":
        turn.say("identify.code_expired", [[("resend_code", "code:resend")]], resend=turn.t("button.resend_code"))
        return
    if result == "none":
        state.step = "pesel"
        state.pending_student_id = None
        turn.say("identify.ask_pesel")
        return
    until = yield ops.RecordWrongGuess("chat_code", student_key)
    if not _locked(turn, until):
        turn.say("identify.code_wrong", [[("resend_code", "code:resend")]])


# --- bound: status, request, renew, revoke, help, support ----------------------------------------

def _bound(turn: Turn) -> Generator[ops.Op, Any, None]:
    state, command, button = turn.state, turn.command, turn.button
    step_name = state.step if state.step in BOUND_STEPS else "menu"
    state.step = step_name

    if command in ("status", "start", "menu") or button == "menu:status":
        state.step = "menu"
        yield from _show_status(turn)
        return
    if command in ("request", "apply", "wniosek") or button == "menu:request":
        yield from _offer_request(turn)
        return
    if command in ("renew", "przedluz") or button == "menu:renew":
        yield from _offer_renew(turn)
        return
    if command in ("revoke", "uniewaznij") or button == "menu:revoke":
        yield from _offer_revoke(turn)
        return
    if command in ("help", "pomoc") or button == "menu:help":
        state.step = "menu"
        if command:  # the "How to activate" button asks only about activation
            turn.say("help.commands")
        turn.say("help.choose", [[("steps_one", "help:step"), ("steps_all", "help:all")], [("menu", "menu:status")]])
        return
    if button == "help:all":
        state.step = "menu"
        turn.say("activation.steps_all", [[("menu", "menu:status")]])
        return
    if button in ("help:step", "help:next"):
        state.help_step = 1 if button == "help:step" else state.help_step + 1
        if state.help_step > ACTIVATION_STEPS:
            state.help_step = 0
            state.step = "menu"
            turn.say("activation.done", [[("menu", "menu:status")]])
            return
        state.step = "help_steps"
        turn.say(f"activation.step{state.help_step}", [[("next", "help:next"), ("menu", "menu:status")]],
                 n=state.help_step, total=ACTIVATION_STEPS)
        return
    if command in ("support", "pomoc_czlowiek") or button == "menu:support":
        state.step = "support_text"
        turn.say("support.ask")
        return
    if button.startswith(INTENT_BUTTON):  # one of the likeliest meanings, offered as a button
        state.support_draft = None
        state.step = "menu"
        yield from _act_on_intent(turn, button.removeprefix(INTENT_BUTTON))
        return
    if turn.intent in ("revoke_lost_phone", "new_phone") and step_name not in ("support_text", "confirm_revoke"):
        # The lost phone is heard in every step: whatever was pending, its confirmation comes first.
        state.support_draft = None
        yield from _act_on_intent(turn, turn.intent)
        return

    if step_name == "confirm_request":
        yield from _confirm(turn, _do_request, "request")
        return
    if step_name == "confirm_replace":
        yield from _confirm(turn, _do_replace, "replace")
        return
    if step_name == "confirm_renew":
        yield from _confirm(turn, _do_renew, "renew")
        return
    if step_name == "revoke_reason":
        yield from _revoke_reason(turn)
        return
    if step_name == "confirm_revoke":
        yield from _confirm(turn, _do_revoke, "revoke")
        return
    if step_name == "support_text":
        yield from _support_text(turn)
        return
    if step_name == "confirm_support":
        yield from _confirm(turn, _do_support, "support")
        return
    if step_name == "confirm_forget":
        yield from _confirm_forget(turn)
        return

    if turn.event.kind == "command":
        turn.say("unknown_command")
        yield from _prompt(turn)
        return
    if turn.event.kind == "button":
        yield from _show_status(turn)  # a stale button from an older message
        return
    if turn.intent not in ("", "out_of_scope"):
        yield from _act_on_intent(turn, turn.intent)
        return
    if _answer_faq(turn, allow_personal=True):
        return
    # Kept in the conversation's state until confirmed: never with a PESEL or a code in clear.
    state.support_draft = redact_personal(turn.text)
    state.step = "confirm_support"
    likely = [intent for intent, _ in turn.understood.candidates if intent in OFFERED_INTENTS][:3]
    rows: list[list[tuple[str, str]]] = [[(f"intent_{intent}", f"{INTENT_BUTTON}{intent}")] for intent in likely]
    rows.append([("send_to_staff", f"{CONFIRM_YES}support"), ("no", "confirm:no")])
    turn.say("understand.options" if likely else "support.offer", rows, send=turn.t("button.send_to_staff"))


def _status_buttons(overview: ops.Overview) -> list[list[tuple[str, str]]]:
    rows: list[list[tuple[str, str]]] = []
    credential = overview.credential
    live = credential is not None and credential.state in ("requested", "pending_activation", "active")
    if (not live and not overview.ineligible) or overview.replacement_possible:
        rows.append([("request", "menu:request")])
    if overview.renewal_possible:
        rows.append([("renew", "menu:renew")])
    if live:
        rows.append([("revoke", "menu:revoke")])
    rows.append([("activation_help", "menu:help"), ("support", "menu:support")])
    return rows


def _show_status(turn: Turn) -> Generator[ops.Op, Any, None]:
    overview = yield from _overview(turn)
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
    turn.say_text("\n\n".join(lines), _status_buttons(overview))


def _ineligible_text(turn: Turn, reasons: tuple[str, ...]) -> str:
    return ineligible_text(turn.t, reasons)


def _overview(turn: Turn) -> Generator[ops.Op, Any, ops.Overview | None]:
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


def _offer_request(turn: Turn) -> Generator[ops.Op, Any, None]:
    overview = yield from _overview(turn)
    if overview is None:
        return
    turn.state.step = "menu"
    if overview.ineligible:
        turn.say_text(_ineligible_text(turn, overview.ineligible))
        return
    credential = overview.credential
    if credential is not None and credential.state == "active" and overview.replacement_possible:
        _offer_replace(turn, overview, credential)
        return
    if credential is not None and credential.state in ("requested", "pending_activation", "active"):
        text = turn.t(f"request.already_{credential.state}")
        if credential.state == "active" and turn.config.policy == "els":
            # Not "revoke it first" alone: under the ELS policy a new application replaces it, and
            # the student hears when that becomes possible.
            text += "\n\n" + _els_situation(turn, overview, credential)
        turn.say_text(text, [[("status", "menu:status"), ("revoke", "menu:revoke")]])
        return
    turn.state.step = "confirm_request"
    short_until = overview.short_validity_until
    if short_until is not None:
        # Told before issuing, so the student can choose to extend the card first.
        days = (short_until - turn.now.astimezone(WARSAW).date()).days + 1
        turn.say("request.els_expires_soon", until=format_date(short_until), days=turn.days(days))
    buttons = [[("confirm", f"{CONFIRM_YES}request"), ("cancel", "confirm:no")]]
    if overview.short_activation_until is not None:
        # Not "valid for 30 days" when the credential ends sooner: the data dies with it.
        turn.say("request.confirm_until", buttons, email=overview.masked_email,
                 deadline=turn.when(overview.short_activation_until))
        return
    turn.say("request.confirm", buttons, email=overview.masked_email,
             days=turn.days(turn.config.activation_window_days))


def _offer_replace(turn: Turn, overview: ops.Overview, credential: ops.CredentialView) -> None:
    """ELS policy: the same confirmation as a first application, saying that it replaces the active one."""
    turn.state.step = "confirm_replace"
    buttons = [[("confirm", f"{CONFIRM_YES}replace"), ("cancel", "confirm:no")]]
    params = {"email": overview.masked_email, "valid_until": format_date(credential.valid_until),
              "until": format_date(overview.replacement_until) if overview.replacement_until else ""}
    if overview.replacement_activation_until is not None:
        turn.say("request.confirm_replace_until", buttons, deadline=turn.when(overview.replacement_activation_until),
                 **params)
        return
    turn.say("request.confirm_replace", buttons, days=turn.days(turn.config.activation_window_days), **params)


def _els_situation(turn: Turn, overview: ops.Overview, credential: ops.CredentialView | None) -> str:
    """ELS policy: where the student stands on the way to the next semester's credential."""
    reason = overview.replacement_reason
    valid_until = format_date(credential.valid_until) if credential else ""
    els_until = format_date(overview.els_valid_until) if overview.els_valid_until else ""
    if overview.replacement_possible and overview.replacement_until:
        return turn.t("renew.els_replace_now", els_valid_until=els_until,
                      until=format_date(overview.replacement_until))
    if credential is None or credential.state not in ("requested", "pending_activation", "active"):
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
    text = turn.t("renew.els_apply_again") + "\n\n" + _els_situation(turn, overview, credential)
    live = credential is not None and credential.state in ("requested", "pending_activation", "active")
    if overview.replacement_possible or not live:
        turn.say_text(text, [[("request", "menu:request")], [("status", "menu:status")]])
        return
    turn.say_text(text, [[("status", "menu:status")]])


def _offer_renew(turn: Turn) -> Generator[ops.Op, Any, None]:
    overview = yield from _overview(turn)
    if overview is None:
        return
    turn.state.step = "menu"
    if overview.ineligible and not overview.renewal_possible:
        # Not "apply if you have none": they may not have one at all, and hear why.
        turn.say_text(turn.t("renew.ineligible") + "\n\n" + _ineligible_text(turn, overview.ineligible),
                      [[("status", "menu:status")]])
        return
    if turn.config.policy == "els":
        _explain_els_renewal(turn, overview)
        return
    if not overview.renewal_possible or overview.renewal_until is None:
        valid_until = format_date(overview.credential.valid_until) if overview.credential else ""
        opens_on = format_date(overview.renewal_opens_on) if overview.renewal_opens_on else ""
        turn.say(f"renew.{overview.renewal_reason}", [[("status", "menu:status")]], valid_until=valid_until,
                 opens_on=opens_on)
        return
    turn.state.step = "confirm_renew"
    turn.say("renew.confirm", [[("confirm", f"{CONFIRM_YES}renew"), ("cancel", "confirm:no")]],
             until=format_date(overview.renewal_until))


def _offer_revoke(turn: Turn, reason: str | None = None) -> Generator[ops.Op, Any, None]:
    overview = yield from _overview(turn)
    if overview is None:
        return
    credential = overview.credential
    if credential is None or credential.state not in ("requested", "pending_activation", "active"):
        turn.state.step = "menu"
        if reason is not None:  # nothing to revoke: what to do with the new phone instead
            turn.say(f"revoke.nothing_{reason}", _status_buttons(overview))
            return
        turn.say("revoke.nothing", [[("status", "menu:status")]])
        return
    if reason is not None:
        # Typed "I lost my phone": the same confirmation as the reason button, naming the action.
        turn.state.revoke_reason = reason
        turn.state.step = "confirm_revoke"
        turn.say("revoke.confirm_typed", [[("revoke_yes", f"{CONFIRM_YES}revoke"), ("cancel", "confirm:no")]],
                 reason=turn.t(f"revoke.because.{reason}"), days=turn.days(turn.config.activation_window_days))
        return
    turn.state.step = "revoke_reason"
    turn.say("revoke.ask_reason", [[("reason_lost_phone", "revoke:lost_phone")],
                                   [("reason_new_phone", "revoke:new_phone")],
                                   [("reason_student_request", "revoke:student_request")],
                                   [("cancel", "confirm:no")]])


def _revoke_reason(turn: Turn) -> Generator[ops.Op, Any, None]:
    reason = turn.button.removeprefix("revoke:")
    if turn.button == "confirm:no":
        yield from _cancel(turn)
        return
    if reason not in REVOKE_REASONS:
        yield from _offer_revoke(turn)
        return
    turn.state.revoke_reason = reason
    turn.state.step = "confirm_revoke"
    turn.say("revoke.confirm", [[("revoke_yes", f"{CONFIRM_YES}revoke"), ("cancel", "confirm:no")]],
             reason=turn.t(f"end_reason.{reason}"))


def _confirm(turn: Turn, action: Callable[[Turn], Flow], what: str) -> Generator[ops.Op, Any, None]:
    """Yes, no, or ask again. A yes button names what it confirms: an old "Confirm" under an
    application, pressed while a revocation is asked, must not revoke (it asks again)."""
    answer = turn.yes_no()
    if what == "support" and turn.intent == "human":  # "a person, please": that is a yes here
        answer = True
    if turn.button == f"{CONFIRM_YES}{what}" or answer is True:
        turn.state.step = "menu"
        replies = yield from action(turn)
        turn.replies.extend(replies)
        return
    if turn.button == "confirm:no" or answer is False:
        yield from _cancel(turn)
        return
    step_name = turn.state.step
    if turn.event.kind == "text" and turn.intent not in ("", "out_of_scope") and what != "support":
        # Another question while a confirmation waits: answered, then the same question again.
        yield from _act_on_intent(turn, turn.intent, answer_only=True)
        turn.state.step = step_name
        yield from _prompt(turn)
        return
    if what == "support" and turn.event.kind == "text" and turn.intent not in ("", "out_of_scope"):
        # Instead of sending the draft, the student said what they meant.
        turn.state.support_draft = None
        turn.state.step = "menu"
        yield from _act_on_intent(turn, turn.intent)
        return
    labels = _confirm_labels(what)
    turn.say("confirm.expected", yes=turn.t(f"button.{labels[0]}"), no=turn.t(f"button.{labels[1]}"))
    yield from _prompt(turn)


def _service_error(turn: Turn, result: ops.ServiceResult) -> None:
    if result.reasons:
        turn.say_text(_ineligible_text(turn, result.reasons))
    else:
        turn.say(f"error.{result.error or 'generic'}", [[("status", "menu:status")]])


def _do_request(turn: Turn, *, replace: bool = False) -> Flow:
    """A new application; `replace` (ELS policy): it takes the place of the active credential."""
    assert turn.state.student_id is not None
    result = yield ops.RequestCredential(turn.state.student_id, turn.lang, replace=replace)
    if not result.ok or result.credential is None:
        _service_error(turn, result)
        return []
    overview = yield ops.StudentOverview(turn.state.student_id)
    deadline = result.credential.activation_deadline
    turn.say("request.done_replace" if replace else "request.done",
             [[("activation_help", "menu:help"), ("status", "menu:status")]],
             email=overview.masked_email if overview else "", deadline=turn.when(deadline) if deadline else "",
             valid_until=format_date(result.credential.valid_until))
    return []


def _do_replace(turn: Turn) -> Flow:
    return (yield from _do_request(turn, replace=True))


def _do_renew(turn: Turn) -> Flow:
    assert turn.state.student_id is not None
    result = yield ops.RenewCredential(turn.state.student_id, turn.lang)
    if result.error == "els_apply_again":
        # A renewal confirmed before the ELS policy was in force: say what to do instead.
        yield from _offer_renew(turn)
        return []
    if not result.ok or result.credential is None:
        _service_error(turn, result)
        return []
    turn.say("renew.done", [[("status", "menu:status")]], valid_until=format_date(result.credential.valid_until))
    return []


def _do_revoke(turn: Turn) -> Flow:
    assert turn.state.student_id is not None
    reason = turn.state.revoke_reason or "student_request"
    result = yield ops.RevokeCredential(turn.state.student_id, reason, turn.lang)
    turn.state.revoke_reason = None
    if not result.ok:
        _service_error(turn, result)
        return []
    # A phone's revocation: the new application waits for the phone, as the activation window starts at once.
    turn.say("revoke.done_phone" if reason in ("lost_phone", "new_phone") else "revoke.done",
             [[("issue_new", "menu:request")], [("status", "menu:status")]],
             days=turn.days(turn.config.activation_window_days))
    return []


def _support_text(turn: Turn) -> Generator[ops.Op, Any, None]:
    if turn.event.kind != "text":
        turn.say("support.ask")
        return
    turn.state.support_draft = redact_personal(turn.text)
    replies = yield from _do_support(turn)
    turn.replies.extend(replies)


def _do_support(turn: Turn) -> Flow:
    draft = turn.state.support_draft
    turn.state.support_draft = None
    turn.state.step = "menu"
    if not draft:
        turn.say("support.ask")
        turn.state.step = "support_text"
        return []
    thread_id = yield ops.OpenSupportThread(turn.state.student_id, draft, turn.lang)
    if turn.truncated:
        turn.say("support.truncated", limit=turn.config.max_text)
    turn.say("support.opened", thread=thread_id)
    yield from _menu(turn)  # not a dead end: what the student can do next
    return []


def _confirm_forget(turn: Turn) -> Generator[ops.Op, Any, None]:
    answer = turn.yes_no()
    if answer is True:
        yield from _forget(turn)
    elif answer is False:
        yield from _cancel(turn)
    else:  # neither yes nor no: nothing is deleted and nothing is silently cancelled
        turn.say("forget.expected", [[("forget_yes", "forget:yes"), ("cancel", "cancel")]],
                 yes=turn.t("button.forget_yes"), no=turn.t("button.cancel"))


def _forget(turn: Turn) -> Generator[ops.Op, Any, None]:
    yield ops.ForgetAccount()
    turn.reset_state()
    turn.state.forgotten = True
    turn.say("forget.done")  # still in the language the student used


def _cancel(turn: Turn) -> Generator[ops.Op, Any, None]:
    state = turn.state
    state.revoke_reason = None
    state.support_draft = None
    if state.student_id is not None:
        state.step = "menu"
        turn.say("cancelled")
        yield from _prompt(turn)  # the menu's buttons, not a dead end
        return
    if state.step in ("second_id", "code"):
        state.step = "pesel"
        state.pesel_hash = None
        state.pending_student_id = None
    if state.step == "confirm_forget":
        state.step = "pesel" if state.terms_version else "terms"
    turn.say("cancelled")
    yield from _prompt(turn)


def _faq_match(turn: Turn) -> FaqMatch | None:
    """The FAQ entry the student's text asks about, answered in the language it is typed in."""
    if turn.event.kind != "text":
        return None
    understood = turn.understood
    entry = turn.config.faq.entry_for(understood, understood.language)
    if entry is None:
        entry = turn.config.faq.entry_for(understood, turn.lang)
    return FaqMatch(entry, understood) if entry is not None else None


def _answer_faq(turn: Turn, *, allow_personal: bool) -> bool:
    match = _faq_match(turn)
    if match is None:
        return False
    entry = match.entry
    if entry.personal and not allow_personal:
        turn.say("identify.first")
        return True
    buttons: list[list[tuple[str, str]]] = []
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


def _prompt(turn: Turn) -> Generator[ops.Op, Any, None]:
    """Say again what the current step expects."""
    state = turn.state
    if state.step in ("new", "language"):
        _ask_language(turn)
    elif state.step == "terms":
        _show_terms(turn)
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
        yes, no = _confirm_labels(what)
        # Names what waits for the answer: "Potwierdzasz?" alone says nothing after another question.
        key = f"confirm.again_{what}"
        params = {"reason": turn.t(f"revoke.because.{state.revoke_reason or 'student_request'}"),
                  "yes": turn.t(f"button.{yes}"), "no": turn.t(f"button.{no}")}
        turn.say(key if turn.config.catalog.has(turn.lang, key) else "confirm.buttons",
                 [[(yes, f"{CONFIRM_YES}{what}"), (no, "confirm:no")]], **params)
    elif state.step == "confirm_forget":
        turn.say("forget.confirm", [[("forget_yes", "forget:yes"), ("cancel", "cancel")]])
    elif state.step == "revoke_reason":
        yield from _offer_revoke(turn)
    else:
        yield from _menu(turn)


def _menu(turn: Turn) -> Generator[ops.Op, Any, None]:
    """The menu with what this student can do now (Apply when they have no credential)."""
    turn.state.step = "menu"
    overview = (yield ops.StudentOverview(turn.state.student_id)) if turn.state.student_id else None
    if overview is None:
        turn.say("menu.prompt", [[("status", "menu:status"), ("activation_help", "menu:help")],
                                 [("support", "menu:support")]])
        return
    rows = _status_buttons(overview)
    rows[-1] = [("status", "menu:status"), *rows[-1]]
    turn.say("menu.prompt", rows)


def _confirm_labels(what: str) -> tuple[str, str]:
    """The labels of the yes and no buttons of a confirmation (a re-prompt names the same ones)."""
    if what == "support":
        return "send_to_staff", "no"
    return ("revoke_yes" if what == "revoke" else "confirm"), "cancel"


def _act_on_intent(turn: Turn, intent: str, *, answer_only: bool = False) -> Generator[ops.Op, Any, None]:
    """What a bound student's intent leads to: an action's confirmation (as its button would), the
    menu's answers, or the FAQ. `answer_only`: a confirmation is pending, so only answer."""
    state = turn.state
    if not answer_only:
        if intent == "apply":
            yield from _offer_request(turn)
            return
        if intent == "renew":
            yield from _offer_renew(turn)
            if turn.state.step != "confirm_renew":  # not possible now: how renewal works, with its button
                _answer_faq(turn, allow_personal=True)
            return
        if intent in ("revoke_lost_phone", "new_phone"):
            yield from _offer_revoke(turn, reason="lost_phone" if intent == "revoke_lost_phone" else "new_phone")
            return
        if intent == "forget_data":
            state.step = "confirm_forget"
            turn.say("forget.confirm", [[("forget_yes", "forget:yes"), ("cancel", "cancel")]])
            return
        if intent == "human":
            state.step = "support_text"
            turn.say("support.ask")
            return
        if intent == "status_validity":
            yield from _show_status(turn)
            return
        if intent == "activation_help":
            turn.say("help.choose", [[("steps_one", "help:step"), ("steps_all", "help:all")],
                                     [("menu", "menu:status")]])
            return
    if intent in ("greeting", "thanks", "cancel", "no", "yes", "accept_terms", "decline_terms"):
        turn.say(f"understand.{intent}" if intent in ("greeting", "thanks") else "understand.nothing_pending")
        if not answer_only:
            yield from _menu(turn)
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
            yield from _show_status(turn)
            return
        else:
            turn.say_text(entry.answer_for(turn.config.policy))
    if not answer_only:
        yield from _menu(turn)
