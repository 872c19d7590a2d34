"""What the engine asks of storage: it yields one of these and is sent the answer back.

The engine itself does no I/O (the httpx `auth_flow` idea): `core.conversation.runner`
answers these against the database inside the event's unit of work, and tests can answer
them from a script.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

__all__ = [
    "AcceptTerms",
    "BindAccount",
    "CheckLocked",
    "CheckResend",
    "CredentialView",
    "ForgetAccount",
    "IdentifyKeys",
    "MaskedEmail",
    "MatchStudent",
    "Op",
    "OpenSupportThread",
    "Overview",
    "RecordWrongGuess",
    "RenewCredential",
    "RequestCredential",
    "RevokeCredential",
    "SendBindingCode",
    "ServiceResult",
    "SetLanguage",
    "StudentOverview",
    "VerifyBindingCode",
]


@dataclass(frozen=True)
class CheckLocked:
    """-> datetime | None: when the lock on `kind` guesses lifts for this account (or student).

    `also`: further per-student keys the guess counts against (see IdentifyKeys).
    """

    kind: str
    student_key: str | None = None
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordWrongGuess:
    """-> datetime | None: records a wrong guess; returns the lock's end if this one locked it."""

    kind: str
    student_key: str | None = None
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class IdentifyKeys:
    """-> tuple[str, ...]: the guess keys of an identification besides the typed PESEL's.

    One of the typed ELS or album number, whoever holds it (a number nobody holds is limited
    alike, so a lock tells nothing of whether it exists), and one of the ELS or album number
    of the student the typed PESEL belongs to, so failures by either number add up.
    """

    pesel_hash: str
    second: str
    by: str  # "els" or "album"


@dataclass(frozen=True)
class MatchStudent:
    """-> int | None: the student whose PESEL hash and ELS or album number both match."""

    pesel_hash: str
    second: str
    by: str  # "els" or "album"


@dataclass(frozen=True)
class SendBindingCode:
    """-> str: queues a one-time code to the register address; returns that address masked."""

    student_id: int
    language: str


@dataclass(frozen=True)
class MaskedEmail:
    """-> str: the student's register address masked, as SendBindingCode showed it ("" if gone)."""

    student_id: int


@dataclass(frozen=True)
class CheckResend:
    """-> datetime | None: when this account and the student may have a code mailed again
    (None: now). Each code mailed counts, the first one too."""

    student_id: int


@dataclass(frozen=True)
class VerifyBindingCode:
    """-> tuple[str, int | None]: ("ok", student_id) | ("wrong", None) | ("expired", None) | ("none", None)."""

    code: str


@dataclass(frozen=True)
class BindAccount:
    """-> None: binds this chat account to the student."""

    student_id: int
    language: str


@dataclass(frozen=True)
class SetLanguage:
    """-> None: the language chosen in a bound chat, kept on its link for what the jobs send."""

    language: str


@dataclass(frozen=True)
class AcceptTerms:
    """-> None: records acceptance of a terms version by this account."""

    version: str
    student_id: int | None


@dataclass(frozen=True)
class CredentialView:
    public_id: str
    state: str
    valid_until: date
    activation_deadline: datetime | None
    end_reason: str | None
    ends_on_removal: bool = False  # valid_until is the removal deadline, before the credential's own


@dataclass(frozen=True)
class Overview:
    first_name: str
    masked_email: str
    ineligible: tuple[str, ...]
    credential: CredentialView | None
    renewal_possible: bool
    renewal_reason: str
    renewal_until: date | None
    renewal_opens_on: date | None = None  # reason "too_early": the first day a renewal is possible
    short_validity_until: date | None = None  # set when the ELS card would cut a new credential short
    # Set when the end of a new credential's validity would cut its activation window short.
    short_activation_until: datetime | None = None
    # ELS policy: a new application replacing the active credential (core.credentials.renewal.replacement_check).
    replacement_possible: bool = False
    replacement_reason: str = "not_els"
    replacement_until: date | None = None  # the new credential's end
    replacement_opens_on: date | None = None  # the first day a new application may replace it
    # Set when the new credential's end would cut its activation window short.
    replacement_activation_until: datetime | None = None
    els_valid_until: date | None = None


@dataclass(frozen=True)
class StudentOverview:
    """-> Overview | None (None: the student is gone from the register)."""

    student_id: int


@dataclass(frozen=True)
class ServiceResult:
    ok: bool
    error: str | None = None  # a catalog key suffix
    reasons: tuple[str, ...] = ()
    credential: CredentialView | None = None


@dataclass(frozen=True)
class RequestCredential:
    """-> ServiceResult. `replace`: a new application replacing the active credential (ELS
    policy), confirmed as such; without it an active credential refuses the application."""

    student_id: int
    language: str
    replace: bool = False


@dataclass(frozen=True)
class RenewCredential:
    """-> ServiceResult."""

    student_id: int
    language: str


@dataclass(frozen=True)
class RevokeCredential:
    """-> ServiceResult."""

    student_id: int
    reason: str
    language: str


@dataclass(frozen=True)
class OpenSupportThread:
    """-> int: a support thread escalated to staff, with the student's text as first message."""

    student_id: int | None
    text: str
    language: str
    context: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ForgetAccount:
    """-> None: unbinds the account and deletes its conversation data (not the register)."""


Op = (
    CheckLocked | RecordWrongGuess | IdentifyKeys | MatchStudent | SendBindingCode | MaskedEmail | CheckResend
    | VerifyBindingCode | BindAccount
    | SetLanguage | AcceptTerms | StudentOverview | RequestCredential | RenewCredential | RevokeCredential
    | OpenSupportThread | ForgetAccount
)
