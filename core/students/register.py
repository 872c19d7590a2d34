"""The student register (rejestr studentów): validate a CSV as a whole, then import or sync it.

A file with any bad line is refused entirely, with every bad line listed, so the
register is never left half-updated. Line numbers are the file's own (a quoted cell may
span lines), and a problem never quotes a PESEL in clear.

A sync marks the active students missing from the file removed (skreśleni) today; a missing
graduated or suspended student keeps that status. A PESEL may move to another album in
one import: between albums both in the file, or, in a sync, from an album missing from
the file to a new one (a student's second-cycle album); the student's live credential
follows them when the new album may have one, and so do the chats bound to the old album unless
a live credential stays behind on it. A changed e-mail address kills whatever was meant for the
old one (core.students.email_change).
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlmodel import Session, col, select

from core.app.errors import MassRemovalError, MlegError, RegisterImportError
from core.app.settings import DEFAULT_MAX_REMOVED_SHARE
from core.conversation.state import ConversationState
from core.credentials.service import live_credential
from core.security.redact import redact_personal
from core.security.secrets_box import SecretBox
from core.storage import audit
from core.storage.models import (
    ChatLink,
    Conversation,
    CredentialState,
    Student,
    StudentStatus,
    StudyLevel,
)
from core.students.eligibility import Policy, check_eligibility
from core.students.email_change import EmailChange, apply_email_changes
from core.students.pesel import PeselProblem, check_pesel, mask_pesel

if TYPE_CHECKING:
    from core.app.context import AppContext

__all__ = [
    "HEADER", "MAX_LENGTHS", "ImportReport", "RegisterRow", "RegisterWriteError", "import_register",
    "mass_removal_reason", "parse_register",
]

HEADER = (
    "album", "pesel", "first_name", "last_name", "email", "study_level",
    "status", "els_number", "els_valid_until", "removed_on",
)
_EMAIL = re.compile(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}$")
_PESEL_REASONS = {
    PeselProblem.LENGTH: "PESEL must have 11 digits",
    PeselProblem.DIGITS: "PESEL must contain digits only",
    PeselProblem.CHECKSUM: "PESEL check digit is wrong",
    PeselProblem.DATE: "PESEL encodes an impossible birth date",
}
_BATCH = 2000
# A header cell is quoted back only if it looks like a column name: the first line of a file
# without a header is a student row, and a digit in it may belong to a PESEL.
_COLUMN_NAME = re.compile(r"^[A-Za-z][A-Za-z_ \-]{0,39}$")
# Ten digits or more: a PESEL (11), one whose leading zero Excel dropped (born in the 2000s), or
# a piece of one. A register cell holds no other number that long worth showing in clear.
_PESEL_LIKE = re.compile(r"\d{10,}")
# A number Excel turned into scientific notation ("4.25063E+10", "4,25063E+10" in Polish).
_SCIENTIFIC = re.compile(r"(?i)(?<![\d.,])(\d)([.,])(\d+)(E\+?)(\d+)")
_SCIENTIFIC_CELL = re.compile(r"(?i)^\d(?:[.,]\d+)?E\+?\d+$")
_SHOWN_MAX = 60


def _model_length(column: str) -> int:
    length = getattr(Student.__table__.c[column].type, "length", None)  # type: ignore[attr-defined]
    assert isinstance(length, int), column
    return length


# The longest value each free-text column may hold (the database's own limits).
MAX_LENGTHS: dict[str, int] = {
    column: _model_length(column) for column in ("album", "first_name", "last_name", "email", "els_number")
}
_EXCEL_HINT = (
    "Excel dropped the leading zeros of PESEL numbers or wrote them in scientific notation "
    "({count} line(s), the first here): format the pesel column as Text (or open the export "
    "with that column as Text) and save the file again"
)


class RegisterWriteError(MlegError):
    """The database refused the import's writes (a constraint, a value too long): nothing was changed.

    Its message names the kind of refusal only: the database's own message quotes the row.
    """


@dataclass(frozen=True)
class RegisterRow:
    """A validated line; `pesel_hash`/`pesel_masked` replace the clear number at once."""

    album: str
    pesel_hash: str | None
    pesel_masked: str | None
    first_name: str
    last_name: str
    email: str
    study_level: str
    status: str
    els_number: str | None
    els_valid_until: date | None
    removed_on: date | None
    digest: str
    line: int = 0  # where the row starts in the file (a quoted cell may span lines)


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    total: int = 0
    albums_removed: list[str] = field(default_factory=list)
    # Why a real sync would refuse this file (empty, or too many removals); set even when
    # the caller allowed it, so a dry run can say so.
    mass_removal: str | None = None
    # Missing from a sync's file but left as they were: graduated or suspended students.
    kept_absent: int = 0
    # PESELs that moved, in a sync, from an album missing from the file to one in it.
    pesel_moved: int = 0
    credentials_moved: int = 0
    # Chat accounts bound to such an album that followed the student to the new one.
    chats_moved: int = 0
    # Students whose e-mail address changed, and what was meant for their old address.
    email_changed: int = 0
    activations_revoked: int = 0
    mail_cancelled: int = 0


def _valid_pesel(number: str) -> bool:
    return check_pesel(number)[1] is None


def _masked(value: str) -> str:
    """Every PESEL-like number in a value masked: valid ones in any spelling (core.security.redact), any run
    of ten digits or more (an 11-digit one, one that lost its leading zero, a piece of one), and
    Excel's scientific notation (which keeps the first digits: the birth date)."""
    masked = redact_personal(value)
    masked = _PESEL_LIKE.sub(lambda m: mask_pesel(m.group()), masked)
    masked = _SCIENTIFIC.sub(lambda m: m.group(1) + m.group(2) + "*" * len(m.group(3)) + m.group(4) + m.group(5),
                             masked)
    return masked if len(masked) <= _SHOWN_MAX else masked[:_SHOWN_MAX] + "..."


def _shown(value: str) -> str:
    """A cell as quoted in a problem: shifted columns can put a PESEL anywhere, so mask it."""
    return repr(_masked(value))


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _control_character(value: str) -> str | None:
    """What control character `value` holds, in words, or None."""
    for ch in value:
        if ch in "\r\n\u2028\u2029":
            return "a line break"
        if ch == "\x00":
            return "a NUL character"
        if ch == "\t":
            return "a tab"
        if unicodedata.category(ch) == "Cc":
            return f"a control character (U+{ord(ch):04X})"
    return None


def _parse_date(value: str, column: str, problems: list[str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        problems.append(f"{column} {_shown(value)} is not an ISO date (YYYY-MM-DD)")
        return None


def _header_problem(header: list[str]) -> str | None:
    """None for the right header, else what is wrong with it, naming columns, never quoting data."""
    names = [cell.strip() for cell in header]
    if tuple(names) == HEADER:
        return None
    expected = f"header must be exactly: {','.join(HEADER)}"
    return f"{expected}; {_header_hint(names)}"


def _header_hint(names: list[str]) -> str:
    for separator, kind in ((";", "semicolon"), ("\t", "tab")):
        if len(names) < len(HEADER) and any(separator in name for name in names):
            return f"the file looks {kind}-separated: save it as CSV UTF-8 with commas"
    if not any(name.lower() in HEADER for name in names):
        return ("the first line has none of these column names: the file seems to have no header "
                "line (add it as the first line; `mleg registry header` prints it)")
    if [name.lower() for name in names] == list(HEADER):
        return "column names must be lower case"
    parts: list[str] = []
    missing = [column for column in HEADER if column not in names]
    if missing:
        parts.append("missing " + ", ".join(missing))
    unexpected = [name for name in names if name not in HEADER]
    shown = [name for name in unexpected if _COLUMN_NAME.match(name)]
    if shown:
        parts.append("unexpected " + ", ".join(shown))
    if len(unexpected) > len(shown):
        parts.append(f"{len(unexpected) - len(shown)} unexpected column(s) not shown (not column names)")
    repeated = sorted({name for name in names if name in HEADER and names.count(name) > 1})
    if repeated:
        parts.append("repeated " + ", ".join(repeated))
    if not parts:
        position, found = next((i, name) for i, name in enumerate(names) if name != HEADER[i])
        parts.append(
            f"columns out of order: column {position + 1} is {found}, expected {HEADER[position]}"
        )
    return "; ".join(parts)


def _domain_allowed(email: str, domains: Iterable[str]) -> bool:
    domain = email.rpartition("@")[2].lower()
    return any(domain == d or domain.endswith("." + d) for d in domains)


def _trim_trailing_empty(cells: list[str], keep: int = 0) -> list[str]:
    """`cells` without the empty cells Excel leaves after the last column (never fewer than `keep`)."""
    end = len(cells)
    while end > keep and not cells[end - 1].strip():
        end -= 1
    return cells[:end]


def _csv_error(exc: csv.Error, start: int) -> str:
    if "field limit" in str(exc):
        return ("a quoted cell starting on this line never ends (an unbalanced quote \"?): the rest "
                "of the file was read as one cell, so nothing after this line was checked; close or "
                "remove the quote")
    return f"not readable as CSV ({exc}); nothing after line {start} was checked"


def _spanned(start: int, end: int) -> str:
    return f" (this line's quoted cell runs on to line {end}: an unbalanced quote \"?)" if end > start else ""


def _pesel_problem(raw: str) -> tuple[str | None, str | None, bool]:
    """(valid PESEL, problem, whether Excel did it) for the pesel cell."""
    if _SCIENTIFIC_CELL.match(raw):
        return None, (f"PESEL {_shown(raw)} is a number in scientific notation: its last digits are lost"), True
    number, problem = check_pesel(raw)
    if problem is None and number is not None:
        return number, None, False
    digits = "".join(ch for ch in raw if ch not in " -\t")
    if problem is PeselProblem.LENGTH and len(digits) == 10 and _valid_pesel("0" + digits):
        return None, "PESEL must have 11 digits: it has 10, and a leading 0 would make it valid", True
    return None, _PESEL_REASONS[problem or PeselProblem.CHECKSUM], False


def parse_register(
    data: bytes, *, box: SecretBox, email_domains: list[str]
) -> list[RegisterRow]:
    """Validate the whole file; raise RegisterImportError listing every bad line."""
    problems: list[tuple[int, str]] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RegisterImportError(
            [(line, "file is not UTF-8 (save it as CSV UTF-8); byte "
              f"0x{data[exc.start]:02x} at offset {exc.start}")]
        ) from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise RegisterImportError([(1, _csv_error(exc, 1))]) from None
    if header is None:
        raise RegisterImportError([(1, "file is empty")])
    # Excel saves "...,removed_on,," when cells right of the table were ever touched.
    header = _trim_trailing_empty(header)
    header_problem = _header_problem(header)
    if header_problem is not None:
        raise RegisterImportError([(1, header_problem)])
    rows: list[RegisterRow] = []
    seen_album: dict[str, int] = {}
    seen_pesel: dict[str, int] = {}
    levels = {level.value for level in StudyLevel}
    statuses = {status.value for status in StudentStatus}
    excel_count, excel_first = 0, -1  # lines whose PESEL Excel mangled; the problem that gets the hint
    previous_end = reader.line_num
    while True:
        # reader.line_num counts the file's lines: a quoted cell may hold line breaks.
        line_number = previous_end + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append((line_number, _csv_error(exc, line_number)))
            break
        previous_end = end = reader.line_num
        if not record or all(not cell.strip() for cell in record):
            continue
        line_problems: list[str] = []
        record = _trim_trailing_empty(record, keep=len(HEADER))
        if len(record) != len(HEADER):
            problems.append((line_number, f"expected {len(HEADER)} columns, found {len(record)}"
                             + _spanned(line_number, end)))
            continue
        values = dict(zip(HEADER, (cell.strip() for cell in record), strict=True))
        if _CONTROL.search("".join(values.values())):
            # A NUL or a line break in a cell: nothing else said about the line is reliable.
            for column in HEADER:
                control = _control_character(values[column])
                if control is not None:
                    problems.append((line_number, f"{column} contains {control}: a cell must be one line of "
                                                  "plain text" + _spanned(line_number, end)))
            continue
        for column, limit in MAX_LENGTHS.items():
            if len(values[column]) > limit:
                line_problems.append(f"{column} is longer than {limit} characters ({len(values[column])})")
        album = values["album"]
        if not album:
            line_problems.append("album is empty")
        elif album in seen_album:
            line_problems.append(f"duplicate album {_shown(album)} (first on line {seen_album[album]})")
        else:
            seen_album[album] = line_number
        pesel_hash = pesel_masked = None
        if values["pesel"]:
            number, pesel_problem, by_excel = _pesel_problem(values["pesel"])
            if pesel_problem is not None or number is None:
                if by_excel:
                    excel_count += 1
                    if excel_first < 0:
                        excel_first = len(problems) + len(line_problems)
                line_problems.append(pesel_problem or _PESEL_REASONS[PeselProblem.CHECKSUM])
            else:
                pesel_hash = box.pesel_hash(number)
                pesel_masked = mask_pesel(number)
                if pesel_hash in seen_pesel:
                    line_problems.append(
                        f"same PESEL as line {seen_pesel[pesel_hash]} (a student is on one line only: "
                        "for a student's new album, leave the old one out of the file and import with --sync)"
                    )
                else:
                    seen_pesel[pesel_hash] = line_number
        for name in ("first_name", "last_name"):
            if not values[name]:
                line_problems.append(f"{name} is empty")
        email = values["email"].lower()
        if not _EMAIL.match(email):
            line_problems.append(f"e-mail {_shown(values['email'])} is malformed")
        elif not _domain_allowed(email, email_domains):
            line_problems.append(
                f"e-mail domain of {_shown(values['email'])} is not a university domain "
                f"({', '.join(email_domains)})"
            )
        if values["study_level"] not in levels:
            line_problems.append(
                f"study_level {_shown(values['study_level'])} is not one of {', '.join(sorted(levels))}"
            )
        if values["status"] not in statuses:
            line_problems.append(
                f"status {_shown(values['status'])} is not one of {', '.join(sorted(statuses))}"
            )
        els_valid_until = _parse_date(values["els_valid_until"], "els_valid_until", line_problems)
        removed_on = _parse_date(values["removed_on"], "removed_on", line_problems)
        if values["status"] == StudentStatus.REMOVED and not values["removed_on"]:
            line_problems.append("removed_on is required when status is removed")
        if line_problems:
            problems.extend((line_number, p) for p in line_problems)
            continue
        canonical = "\x1f".join(
            [values[h] if h != "pesel" else (pesel_hash or "") for h in HEADER]
        ).replace(values["email"], email)
        rows.append(
            RegisterRow(
                album=album,
                pesel_hash=pesel_hash,
                pesel_masked=pesel_masked,
                first_name=values["first_name"],
                last_name=values["last_name"],
                email=email,
                study_level=values["study_level"],
                status=values["status"],
                els_number=values["els_number"] or None,
                els_valid_until=els_valid_until,
                removed_on=removed_on,
                digest=box.keyed_hash("register-row", canonical),
                line=line_number,
            )
        )
    if excel_first >= 0:  # once for the file, on the first line it concerns
        line, message = problems[excel_first]
        problems[excel_first] = (line, f"{message}; {_EXCEL_HINT.format(count=excel_count)}")
    if problems:
        raise RegisterImportError(problems)
    return rows


class _Existing(NamedTuple):
    id: int
    digest: str
    pesel_hash: str | None
    status: str
    email: str


def _missing(existing: dict[str, _Existing], present: set[str]) -> list[tuple[str, int]]:
    """(album, id) of the students a sync marks removed: active ones not in the file.

    A graduated student missing from the file stays graduated: graduation ended the studies,
    and an export of current students leaves graduates out as a matter of course. A suspended
    student stays suspended too: suspension is not removal, a suspended student may not apply
    anyway, and marking them removed would tell them they were struck off and revoke their
    credential a month later, on nothing but an absence (a removal comes as status removed).
    """
    return [
        (album, found.id)
        for album, found in existing.items()
        if album not in present and found.status == StudentStatus.ACTIVE
    ]


def _guard_mass_removal(
    report: ImportReport,
    existing: dict[str, _Existing],
    missing: list[tuple[str, int]],
    max_share: float,
    *,
    allow: bool,
    moved: frozenset[str] = frozenset(),
) -> None:
    # An album whose PESEL moved to a new one in the file is no sign of a cut-off export: the
    # student is in it (an October with many second-cycle albums must not look like one).
    active = sum(1 for found in existing.values() if found.status == StudentStatus.ACTIVE)
    would_remove = sum(1 for album, _ in missing
                       if existing[album].status == StudentStatus.ACTIVE and album not in moved)
    report.mass_removal = mass_removal_reason(
        rows=report.total, would_remove=would_remove, active=active, max_share=max_share
    )
    if report.mass_removal is not None and not allow:
        raise MassRemovalError(report.mass_removal, would_remove=would_remove, active=active)


def _row_values(row: RegisterRow) -> dict[str, object]:
    return {
        "album": row.album,
        "pesel_hash": row.pesel_hash,
        "pesel_masked": row.pesel_masked,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "email": row.email,
        "study_level": row.study_level,
        "status": row.status,
        "els_number": row.els_number,
        "els_valid_until": row.els_valid_until,
        "removed_on": row.removed_on,
        "row_digest": row.digest,
    }


def mass_removal_reason(*, rows: int, would_remove: int, active: int, max_share: float) -> str | None:
    """Why a sync must not run unattended (removal revokes credentials), or None when it may.

    `would_remove` counts the active students missing from the file, `active` all active ones.
    """
    if rows == 0:
        return ("the file has no student rows (a cut-off export?): a sync would mark every "
                f"active student removed, {would_remove} of them")
    if would_remove > max_share * active:
        return (f"it would mark {would_remove} of {active} active students removed, more than "
                f"{max_share * 100:g}% (MLEG_REGISTRY__MAX_REMOVED_SHARE): is the export complete?")
    return None


def _pesel_claims(
    rows: list[RegisterRow], existing: dict[str, _Existing], *, sync: bool
) -> tuple[list[tuple[RegisterRow, str]], list[tuple[int, str]]]:
    """PESELs of rows in the file held by albums not in it: (row, old album) released in a sync, else problems."""
    holders = {found.pesel_hash: album for album, found in existing.items() if found.pesel_hash}
    incoming = {row.album for row in rows}
    released: list[tuple[RegisterRow, str]] = []
    problems: list[tuple[int, str]] = []
    for row in rows:
        holder = holders.get(row.pesel_hash) if row.pesel_hash else None
        if holder is None or holder == row.album or holder in incoming:
            continue
        if sync:
            released.append((row, holder))
        else:
            new, old = _masked(row.album), _masked(holder)
            problems.append((row.line, (
                f"album {new} has the PESEL of album {old}, already in the register and not in this "
                f"file: if {new} is the same student's new album (e.g. second-cycle studies), import the "
                f"whole register with --sync (album {old} then leaves it as students missing from the "
                f"file do, and its PESEL moves to {new}); otherwise correct the PESEL"
            )))
    return released, problems


def _new_album_ids(session: Session, released: list[tuple[RegisterRow, str]]) -> dict[str, int]:
    """The new albums' student ids, once written (both steps that follow the student need them)."""
    ids = dict(session.exec(
        select(Student.album, Student.id).where(col(Student.album).in_([row.album for row, _ in released]))
    ).all())
    return {album: student_id for album, student_id in ids.items() if student_id is not None}


def _follow_the_student(
    session: Session,
    released: list[tuple[RegisterRow, str]],
    existing: dict[str, _Existing],
    ids: dict[str, int],
    *,
    now: datetime,
    today: date,
    actor: str,
    policy: Policy,
) -> tuple[int, list[EmailChange]]:
    """A PESEL moved from an album missing from the file to the student's new album: their live
    credential moves with it when the new album may have one, so a student who goes on studying
    keeps a working credential. It stays (and ends as a removed or graduated student's does)
    when the new album may not have one (doctoral studies, an expired ELS card, not active) or
    already has one, and when activation data is pending for an address that is no longer the
    student's: the address changed, so core.students.email_change revokes it instead.
    Returns (credentials moved, address changes to handle)."""
    moved, changes = 0, []
    for row, holder in released:
        old, new_id = existing[holder], ids[row.album]
        email_changed = old.email.lower() != row.email.lower()
        if email_changed:
            changes.append(EmailChange(student_id=old.id, old_email=old.email, new_email=row.email,
                                       new_student_id=new_id))
        credential = live_credential(session, old.id)
        if credential is None:
            continue
        student = session.get(Student, new_id)
        assert student is not None
        if credential.state != CredentialState.ACTIVE and email_changed:
            continue
        if not check_eligibility(student, policy, today).ok or live_credential(session, new_id) is not None:
            continue
        credential.student_id = new_id
        credential.updated_at = now
        session.add(credential)
        audit.record(
            session, at=now, actor=actor, action="credential.moved", student_id=new_id,
            credential_id=credential.id, from_student_id=old.id, state=credential.state,
            reason="the student's PESEL moved to a new album in a register sync",
        )
        moved += 1
    session.flush()
    return moved, changes


def _chats_follow_the_student(
    session: Session,
    released: list[tuple[RegisterRow, str]],
    existing: dict[str, _Existing],
    ids: dict[str, int],
    *,
    now: datetime,
    actor: str,
) -> int:
    """A PESEL moved from an album missing from the file to the student's new album: the chat
    accounts bound to the old album are bound to the new one, and their conversations' state with
    them, so the next /status shows the new album and not the removed one. Not while a live
    credential stays behind on the old album (the new one may not have it, or has its own): it
    ends there as a removed student's does, and its notices go to the chats bound to that album.
    Returns the chat accounts moved."""
    postgres = session.get_bind().dialect.name == "postgresql"
    moved = 0
    for row, holder in released:
        old_id, new_id = existing[holder].id, ids[row.album]
        if live_credential(session, old_id) is not None:
            continue
        links = list(session.exec(select(ChatLink).where(ChatLink.student_id == old_id)).all())
        if not links:
            continue
        for link in links:
            link.student_id = new_id
            session.add(link)
        query = select(Conversation).where(sa.or_(*(
            sa.and_(col(Conversation.channel) == link.channel, col(Conversation.account_id) == link.account_id)
            for link in links
        )))
        if postgres:
            query = query.with_for_update()  # as the chat's own turn locks it (core.conversation.runner)
        conversations = 0
        for conversation in session.exec(query).all():
            state = ConversationState.from_json(conversation.state)
            if state.student_id != old_id:
                continue
            state.student_id = new_id
            conversation.state, conversation.updated_at = state.to_json(), now
            session.add(conversation)
            conversations += 1
        audit.record(
            session, at=now, actor=actor, action="chat.moved", student_id=new_id, from_student_id=old_id,
            chats=len(links), conversations=conversations,
            reason="the student's PESEL moved to a new album in a register sync",
        )
        moved += len(links)
    session.flush()
    return moved


def import_register(
    session: Session,
    rows: list[RegisterRow],
    *,
    now: datetime,
    today: date,
    sync: bool = False,
    actor: str = "cli",
    source: str = "",
    max_removed_share: float = DEFAULT_MAX_REMOVED_SHARE,
    allow_mass_removal: bool = False,
    ctx: AppContext | None = None,
    dry_run: bool = False,
) -> ImportReport:
    """Add new students, update changed ones; with `sync`, mark the missing active ones removed today.

    A sync of an empty file, or one removing more than `max_removed_share` of the active
    students, raises MassRemovalError before any change unless `allow_mass_removal`.
    A PESEL of an album not in the file is refused (RegisterImportError, with the line)
    unless `sync`, which moves it. `ctx` gives the issuer (activation data of a changed
    address dies there too), the notices' texts and the issuing policy; `dry_run` keeps the
    issuer out of it (the caller rolls back). A refusal of the database itself (it should
    never come) raises RegisterWriteError, which quotes no data.
    """
    report = ImportReport(total=len(rows))
    existing = {
        album: _Existing(student_id or 0, digest, pesel_hash, status, email)
        for student_id, album, digest, pesel_hash, status, email in session.execute(
            sa.select(col(Student.id), col(Student.album), col(Student.row_digest), col(Student.pesel_hash),
                      col(Student.status), col(Student.email))
        ).all()
    }
    released, conflicts = _pesel_claims(rows, existing, sync=sync)
    if conflicts:
        raise RegisterImportError(conflicts)
    incoming_albums = {row.album for row in rows}
    # Checked before any write: a refused sync must leave the register as it was.
    missing = _missing(existing, incoming_albums) if sync else []
    if sync:
        _guard_mass_removal(report, existing, missing, max_removed_share, allow=allow_mass_removal,
                            moved=frozenset(holder for _, holder in released))
        report.kept_absent = sum(
            1 for album, found in existing.items()
            if album not in incoming_albums and found.status in (StudentStatus.GRADUATED, StudentStatus.SUSPENDED)
        )

    inserts: list[dict[str, object]] = []
    updates: list[dict[str, object]] = []
    changes: list[EmailChange] = []
    # Rows giving up their PESEL in this import: released first, so no row ever takes one
    # another still holds (a PESEL moving between albums, two albums swapping theirs).
    releasing = [existing[holder].id for _, holder in released]
    for row in rows:
        found = existing.get(row.album)
        if found is None:
            inserts.append({**_row_values(row), "created_at": now, "updated_at": now})
        elif found.digest != row.digest:
            updates.append({**_row_values(row), "id": found.id, "updated_at": now})
            if found.pesel_hash and found.pesel_hash != row.pesel_hash:
                releasing.append(found.id)
            if found.email.lower() != row.email.lower():
                changes.append(EmailChange(student_id=found.id, old_email=found.email, new_email=row.email))
        else:
            report.unchanged += 1
    try:
        _write(session, releasing, released, updates, inserts, existing, now=now)
    except (sa_exc.IntegrityError, sa_exc.DataError) as exc:
        kind = type(getattr(exc, "orig", None) or exc).__name__
        raise RegisterWriteError(
            f"the database refused the register import ({kind}); nothing was changed"
        ) from None
    report.added, report.updated = len(inserts), len(updates)

    if sync:
        for start in range(0, len(missing), _BATCH):
            chunk = [student_id for _, student_id in missing[start : start + _BATCH]]
            session.execute(
                sa.update(Student)
                .where(col(Student.id).in_(chunk))
                .values(status=StudentStatus.REMOVED, removed_on=today, updated_at=now,
                        row_digest="")
            )
        report.removed = len(missing)
        report.albums_removed = sorted(album for album, _ in missing)
    if released:
        policy = Policy(ctx.settings.policy) if ctx is not None else Policy.STANDALONE
        report.pesel_moved = len(released)
        new_ids = _new_album_ids(session, released)
        report.credentials_moved, more = _follow_the_student(
            session, released, existing, new_ids, now=now, today=today, actor=actor, policy=policy)
        changes += more
        for row, holder in released:
            audit.record(session, at=now, actor=actor, action="register.pesel_moved",
                         student_id=existing[holder].id, to_album=row.album, from_album=holder)
    handled = apply_email_changes(session, changes, now=now, actor=actor, ctx=ctx, dry_run=dry_run)
    if released:  # after the address changes: a credential they revoked no longer holds the chat back
        report.chats_moved = _chats_follow_the_student(session, released, existing, new_ids, now=now, actor=actor)
    report.email_changed = handled.students
    report.activations_revoked = handled.credentials_revoked
    report.mail_cancelled = handled.mail_cancelled
    audit.record(
        session, at=now, actor=actor, action="register.import",
        source=Path(source).name if source else "", added=report.added,
        updated=report.updated, unchanged=report.unchanged, removed=report.removed, sync=sync,
        kept_absent=report.kept_absent, pesel_moved=report.pesel_moved,
        credentials_moved=report.credentials_moved, chats_moved=report.chats_moved,
        email_changed=report.email_changed,
        activations_revoked=report.activations_revoked, mail_cancelled=report.mail_cancelled,
    )
    return report


def _write(
    session: Session,
    releasing: list[int],
    released: list[tuple[RegisterRow, str]],
    updates: list[dict[str, object]],
    inserts: list[dict[str, object]],
    existing: dict[str, _Existing],
    *,
    now: datetime,
) -> None:
    for start in range(0, len(releasing), _BATCH):
        session.execute(
            sa.update(Student).where(col(Student.id).in_(releasing[start : start + _BATCH]))
            .values(pesel_hash=None)
        )
    # An album missing from the file that gave its PESEL away keeps no trace of it; its next
    # appearance in a file is compared afresh.
    gone = [existing[holder].id for _, holder in released]
    for start in range(0, len(gone), _BATCH):
        session.execute(
            sa.update(Student).where(col(Student.id).in_(gone[start : start + _BATCH]))
            .values(pesel_masked=None, row_digest="", updated_at=now)
        )
    for start in range(0, len(updates), _BATCH):
        session.execute(sa.update(Student), updates[start : start + _BATCH])
    for start in range(0, len(inserts), _BATCH):
        session.execute(sa.insert(Student), inserts[start : start + _BATCH])
    session.flush()
