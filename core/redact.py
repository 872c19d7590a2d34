"""Redaction of personal data in free text: PESEL numbers and codes a student pasted into a mail.

Support mail is written by people, and people paste their PESEL and their activation code
into it. What we keep for staff, and what we echo back (an answer's subject), goes through
`redact_personal` first: a valid PESEL is masked as everywhere else (`44*******59`), a
code is replaced by stars of its shape. Masking a number that only looks like one costs
nothing; keeping a real one in clear is the leak.
"""

from __future__ import annotations

import re

from core.issuer import CODE_ALPHABET, CODE_GROUP_LENGTH, CODE_GROUPS, QR_TOKEN_LENGTH
from core.pesel import check_pesel, mask_pesel

__all__ = ["redact_personal"]

# A PESEL is 11 digits; a longer digit run (an account number) is not one, so only whole runs.
_DIGIT_RUN = re.compile(r"(?<!\d)\d{11}(?!\d)")

_SYMBOL = f"[{CODE_ALPHABET}{CODE_ALPHABET.lower()}]"
_GROUP = f"{_SYMBOL}{{{CODE_GROUP_LENGTH}}}"
# As the activation e-mail shows it (`K7MN-P2QR-TXWZ`), with spaces between groups, or run together.
_CODE = re.compile(
    rf"(?<![A-Za-z0-9]){_GROUP}(?:[- ]?{_GROUP}){{{CODE_GROUPS - 1}}}(?![A-Za-z0-9])"
)
# The QR payload (`MLEG1:<public id>:<token>`), if someone copies it out of a decoder app.
_QR_PAYLOAD = re.compile(rf"MLEG1:[^\s:]+:{_SYMBOL}{{{QR_TOKEN_LENGTH}}}", re.IGNORECASE)
# The chat's 6-digit binding code, recognised only next to a word that says it is a code:
# a bare 6-digit number is as likely a postcode without its dash or an album number. Not in
# our own thread tag (`[MLEG-123456]`), which keeps threading the mail.
_CODE_WORD = r"(?:kod\w*|code\w*|has[łl]\w*|pin)"
_SIX_DIGITS = r"(?<!\d)(?<!MLEG-)\d{6}(?!\d)"
_CHAT_CODE_AFTER_WORD = re.compile(rf"(?i)(\b{_CODE_WORD}\b[^\d\n]{{0,30}}?){_SIX_DIGITS}")
_CHAT_CODE_BEFORE_WORD = re.compile(rf"(?i){_SIX_DIGITS}(?=[^\d\n]{{0,30}}?\b{_CODE_WORD}\b)")


def _mask_pesel_run(match: re.Match[str]) -> str:
    number, problem = check_pesel(match.group(0))
    return mask_pesel(number) if number is not None and problem is None else match.group(0)


def _mask_code(match: re.Match[str]) -> str:
    shaped = match.group(0)
    # Dashes make it a code; without them, three short words ("when what they") or one long
    # one share the alphabet, so only digits or capitals (as the e-mail prints it) decide.
    if "-" in shaped or any(ch.isdigit() for ch in shaped) or shaped.isupper():
        return re.sub(r"[A-Za-z0-9]", "*", shaped)
    return shaped


def redact_personal(text: str) -> str:
    """`text` with every valid PESEL masked and anything shaped like an activation or chat code starred."""
    if not text:
        return text
    text = _DIGIT_RUN.sub(_mask_pesel_run, text)
    text = _QR_PAYLOAD.sub("MLEG1:***", text)
    text = _CODE.sub(_mask_code, text)
    text = _CHAT_CODE_AFTER_WORD.sub(lambda m: m.group(1) + "******", text)
    return _CHAT_CODE_BEFORE_WORD.sub("******", text)
