"""Who the student is, before anything of theirs is shown: the PESEL (kept only as its keyed hash),
the ELS or album number, and the one-time code mailed to the register address, which binds the chat.

Every wrong guess counts against the account and the student (core.security.lockout), and a
wrong PESEL and a wrong number get the same words, so the chat tells nothing of who exists.
"""

from __future__ import annotations

from datetime import datetime

from core.conversation import ops
from core.conversation.faq_answers import IDENTITY_NUMBERS, answer_faq, faq_match, say_entry
from core.conversation.overview import show_status
from core.conversation.prompts import prompt
from core.conversation.state import Step
from core.conversation.turn import Steps, Turn
from core.students.eligibility import Policy, normalize_els_number
from core.students.pesel import check_pesel

__all__ = ["CHAT_CODE_LENGTH", "identify"]

# Digits in the one-time code e-mailed to bind a chat account (core.conversation.runner makes them).
CHAT_CODE_LENGTH = 6
# Stripped from a typed number's ends: "123456." and "(ELS-1234)" are numbers; "-" and "/" inside stay.
_AROUND_A_NUMBER = ".,;:!?()[]\"'„”«»"
# FAQ entries that, asked while the chat code is awaited, are about that code: no activation
# data exists yet, /status is refused before binding, and the code lives minutes, not 30 days.
CHAT_CODE_QUESTIONS = frozenset({"email_not_arrived", "code_expired"})


def _locked(turn: Turn, until: datetime | None) -> bool:
    if until is None:
        return False
    turn.say("identify.locked", until=turn.when(until))
    return True


def identify(turn: Turn) -> Steps:
    state = turn.state
    if turn.command in ("status", "renew", "revoke", "request", "apply", "support", "menu"):
        turn.say("identify.first")
        yield from prompt(turn)
        return
    if turn.command in ("help", "pomoc"):
        turn.say("help.before_binding")
        yield from prompt(turn)
        return
    if turn.command == "start":
        yield from prompt(turn)
        return
    if turn.event.kind == "command":
        turn.say("unknown_command")
        yield from prompt(turn)
        return
    if state.step == Step.PESEL:
        yield from _pesel_step(turn)
    elif state.step == Step.SECOND_ID:
        yield from _second_id_step(turn)
    elif state.step == Step.CODE:
        yield from _code_step(turn)
    else:
        state.step = Step.PESEL
        yield from prompt(turn)


def _looks_like_question(text: str) -> bool:
    return sum(ch.isalpha() for ch in text) >= 4


def _typed_number(text: str) -> str | None:
    """The number in what was typed: the run of words that carry a digit, without the punctuation
    around them ("mój album to 123456." -> "123456", "ELS 1234 5678" -> "12345678"). None when no
    word carries one ("nie wiem, jaki mam numer"), or words stand between several numbers ("PESEL
    ..., czyli ..."): a question, not a number to check against the register."""
    runs: list[list[str]] = []
    after_digits = False
    for word in text.split():
        has_digit = any(ch.isdigit() for ch in word)
        if has_digit and not after_digits:
            runs.append([])
        if has_digit:
            runs[-1].append(word.strip(_AROUND_A_NUMBER))
        after_digits = has_digit
    return "".join(runs[0]) if len(runs) == 1 else None


def _is_sentence(text: str) -> bool:
    return sum(1 for word in text.split() if sum(ch.isalpha() for ch in word) >= 2
               and not any(ch.isdigit() for ch in word)) >= 2


def _pesel_step(turn: Turn) -> Steps:
    if turn.event.kind != "text":
        yield from prompt(turn)
        return
    typed = _typed_number(turn.text)
    number, problem = check_pesel(typed or turn.text)  # a PESEL inside a sentence ("mój PESEL to ...") is the number
    if number is None and _looks_like_question(turn.text):
        if answer_faq(turn, allow_personal=False):
            turn.say("identify.ask_pesel")
            return
        if typed is None:
            # Words and no number: where the number is found, rather than "digits only".
            if not say_entry(turn, IDENTITY_NUMBERS):
                turn.say("identify.pesel_digits")
            turn.say("identify.ask_pesel")
            return
    if _locked(turn, (yield ops.CheckLocked("identify"))):
        return
    if problem is not None or number is None:
        turn.say(f"identify.{problem}")
        return
    turn.state.pesel_hash = turn.config.pesel_hasher(number)
    turn.state.step = Step.SECOND_ID
    turn.say("identify.ask_els" if turn.config.policy == Policy.ELS else "identify.ask_album")


def _second_id_step(turn: Turn) -> Steps:
    state = turn.state
    if turn.event.kind != "text" or state.pesel_hash is None:
        state.step = Step.PESEL if state.pesel_hash is None else state.step
        yield from prompt(turn)
        return
    typed = _typed_number(turn.text)
    if typed is None:
        # No number in it ("nie wiem, jaki mam numer albumu"): answered, never checked against the
        # register, so no guess is counted and the PESEL already given stays.
        if not (_looks_like_question(turn.text) and answer_faq(turn, allow_personal=False)) \
                and not say_entry(turn, IDENTITY_NUMBERS):
            turn.say("identify.second_format")
        turn.say("identify.ask_els" if turn.config.policy == Policy.ELS else "identify.ask_album")
        return
    # A sentence around the number ("mój album to 123456") gives the number; anything else is the
    # number as typed, spaces aside ("ab 500123" is the album AB500123).
    second = (typed if _is_sentence(turn.text) else "".join(turn.text.split())).upper()
    # An ELS number is compared without its "ELS" prefix and dashes: only that prefix is no number.
    significant = normalize_els_number(second) if turn.config.policy == Policy.ELS else second
    if not significant or len(second) > 40:
        turn.say("identify.second_format")
        return
    by = "els" if turn.config.policy == Policy.ELS else "album"
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
        state.step = Step.PESEL
        # The same words whether the PESEL is unknown or the second number is wrong.
        turn.say("identify.no_match")
        if not _locked(turn, until):
            turn.say("identify.ask_pesel")
        return
    state.pesel_hash = None
    state.pending_student_id = student_id
    state.step = Step.CODE
    # Identifying again (another account, after /forget) mails a code too: the same cap as the
    # resend button, or knowing a PESEL and an album would be enough to flood the inbox.
    yield from _send_code(turn, student_id)


def _send_code(turn: Turn, student_id: int) -> Steps:
    """A code mailed to the student, unless the cap on codes mailed says not yet."""
    # Each one mails the student's university inbox: not a button to flood it with.
    until = yield ops.CheckResend(student_id)
    if until is not None:
        turn.say("identify.resend_limited", until=turn.when(until))
        return
    masked = yield ops.SendBindingCode(student_id, turn.lang)
    turn.say("identify.code_sent", email=masked, minutes=turn.config.chat_code_ttl_minutes)


def _code_step(turn: Turn) -> Steps:
    state = turn.state
    if turn.button == "code:resend" and state.pending_student_id:
        if _locked(turn, (yield ops.CheckLocked("chat_code", f"student:{state.pending_student_id}"))):
            return
        yield from _send_code(turn, state.pending_student_id)
        return
    if turn.event.kind != "text":
        yield from prompt(turn)
        return
    if sum(ch.isdigit() for ch in turn.text) != CHAT_CODE_LENGTH:
        # Not a code at all ("abc", a question, a typo short of a digit): no guess to count.
        yield from _not_a_code(turn)
        return
    student_key = f"student:{state.pending_student_id}" if state.pending_student_id else None
    if _locked(turn, (yield ops.CheckLocked("chat_code", student_key))):
        return
    result, student_id = yield ops.VerifyBindingCode(turn.text)
    if result == "ok" and student_id is not None:
        yield ops.BindAccount(student_id, turn.lang)
        state.student_id = student_id
        state.pending_student_id = None
        state.step = Step.MENU
        turn.say("identify.bound")
        yield from show_status(turn)
        return
    if result == "expired":
        turn.say("identify.code_expired", [[("resend_code", "code:resend")]], resend=turn.t("button.resend_code"))
        return
    if result == "none":
        state.step = Step.PESEL
        state.pending_student_id = None
        turn.say("identify.ask_pesel")
        return
    until = yield ops.RecordWrongGuess("chat_code", student_key)
    if not _locked(turn, until):
        turn.say("identify.code_wrong", [[("resend_code", "code:resend")]])


def _not_a_code(turn: Turn) -> Steps:
    """A question about the code gets the code's help; another question its answer; then the code's format."""
    pending = turn.state.pending_student_id
    if _looks_like_question(turn.text):
        match = faq_match(turn)
        about_code = turn.intent == "chat_code_missing" or (
            match is not None and match.entry.id in CHAT_CODE_QUESTIONS)
        if about_code and pending:
            email = yield ops.MaskedEmail(pending)
            turn.say("identify.code_help", email=email, minutes=turn.config.chat_code_ttl_minutes)
        else:
            answer_faq(turn, allow_personal=False)
    turn.say("identify.code_format", [[("resend_code", "code:resend")]], length=CHAT_CODE_LENGTH)
