"""The student register (rejestr studentów): validate a CSV as a whole, then import or sync it.

A file with any bad line is refused entirely, with every bad line listed, so the
register is never left half-updated.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import audit
from core.errors import MassRemovalError, RegisterImportError
from core.models import Student, StudentStatus, StudyLevel
from core.pesel import PeselProblem, check_pesel, mask_pesel
from core.secrets_box import SecretBox
from core.settings import DEFAULT_MAX_REMOVED_SHARE

__all__ = [
    "HEADER", "ImportReport", "RegisterRow", "import_register", "mass_removal_reason", "parse_register",
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
_PESEL_LIKE = re.compile(r"\d{11}")
_SHOWN_MAX = 60


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


def _shown(value: str) -> str:
    """A cell as quoted in a problem: shifted columns can put a PESEL anywhere, so mask it."""
    masked = _PESEL_LIKE.sub(lambda m: mask_pesel(m.group()), value)
    return repr(masked if len(masked) <= _SHOWN_MAX else masked[:_SHOWN_MAX] + "...")


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
    header = next(reader, None)
    if header is None:
        raise RegisterImportError([(1, "file is empty")])
    header_problem = _header_problem(header)
    if header_problem is not None:
        raise RegisterImportError([(1, header_problem)])
    rows: list[RegisterRow] = []
    seen_album: dict[str, int] = {}
    seen_pesel: dict[str, int] = {}
    levels = {level.value for level in StudyLevel}
    statuses = {status.value for status in StudentStatus}
    for line_number, record in enumerate(reader, start=2):
        if not record or all(not cell.strip() for cell in record):
            continue
        line_problems: list[str] = []
        if len(record) != len(HEADER):
            problems.append((line_number, f"expected {len(HEADER)} columns, found {len(record)}"))
            continue
        values = dict(zip(HEADER, (cell.strip() for cell in record), strict=True))
        album = values["album"]
        if not album:
            line_problems.append("album is empty")
        elif album in seen_album:
            line_problems.append(f"duplicate album {_shown(album)} (first on line {seen_album[album]})")
        else:
            seen_album[album] = line_number
        pesel_hash = pesel_masked = None
        if values["pesel"]:
            number, problem = check_pesel(values["pesel"])
            if problem is not None or number is None:
                line_problems.append(_PESEL_REASONS[problem or PeselProblem.CHECKSUM])
            else:
                pesel_hash = box.pesel_hash(number)
                pesel_masked = mask_pesel(number)
                if pesel_hash in seen_pesel:
                    line_problems.append(f"same PESEL as line {seen_pesel[pesel_hash]}")
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
            )
        )
    if problems:
        raise RegisterImportError(problems)
    return rows


def _missing(
    existing: dict[str, tuple[int, str, str | None, str]], present: set[str]
) -> list[tuple[str, int]]:
    """(album, id) of the students a sync marks removed: not in the file, not removed yet."""
    return [
        (album, student_id)
        for album, (student_id, _, _, status) in existing.items()
        if album not in present and status != StudentStatus.REMOVED
    ]


def _guard_mass_removal(
    report: ImportReport,
    existing: dict[str, tuple[int, str, str | None, str]],
    missing: list[tuple[str, int]],
    max_share: float,
    *,
    allow: bool,
) -> None:
    active = sum(1 for _, _, _, status in existing.values() if status == StudentStatus.ACTIVE)
    would_remove = sum(1 for album, _ in missing if existing[album][3] == StudentStatus.ACTIVE)
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
                f"student removed, {would_remove} of them active")
    if would_remove > max_share * active:
        return (f"it would mark {would_remove} of {active} active students removed, more than "
                f"{max_share * 100:g}% (MLEG_REGISTRY__MAX_REMOVED_SHARE): is the export complete?")
    return None


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
) -> ImportReport:
    """Add new students, update changed ones; with `sync`, mark the missing ones removed today.

    A sync of an empty file, or one removing more than `max_removed_share` of the active
    students, raises MassRemovalError before any change unless `allow_mass_removal`.
    """
    report = ImportReport(total=len(rows))
    existing = {
        album: (student_id, digest, pesel_hash, status)
        for student_id, album, digest, pesel_hash, status in session.exec(
            select(Student.id, Student.album, Student.row_digest, Student.pesel_hash, Student.status)
        ).all()
    }
    # A PESEL may move between albums only if the old album lets go of it in the same file.
    incoming_hash_owner = {row.pesel_hash: row.album for row in rows if row.pesel_hash}
    incoming_albums = {row.album for row in rows}
    conflicts: list[tuple[int, str]] = []
    for album, (_, _, pesel_hash, _) in existing.items():
        owner = incoming_hash_owner.get(pesel_hash) if pesel_hash else None
        if owner is not None and owner != album and album not in incoming_albums:
            conflicts.append((0, f"album {owner}: same PESEL as album {album} already in the register"))
    if conflicts:
        raise RegisterImportError(conflicts)
    # Checked before any write: a refused sync must leave the register as it was.
    missing = _missing(existing, incoming_albums) if sync else []
    if sync:
        _guard_mass_removal(report, existing, missing, max_removed_share, allow=allow_mass_removal)

    inserts: list[dict[str, object]] = []
    updates: list[dict[str, object]] = []
    for row in rows:
        found = existing.get(row.album)
        if found is None:
            inserts.append({**_row_values(row), "created_at": now, "updated_at": now})
        elif found[1] != row.digest:
            updates.append({**_row_values(row), "id": found[0], "updated_at": now})
        else:
            report.unchanged += 1
    # Updates first: a PESEL moving from one album to a new one must be released before insert.
    for start in range(0, len(updates), _BATCH):
        session.execute(sa.update(Student), updates[start : start + _BATCH])
    for start in range(0, len(inserts), _BATCH):
        session.execute(sa.insert(Student), inserts[start : start + _BATCH])
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
    audit.record(
        session, at=now, actor=actor, action="register.import",
        source=Path(source).name if source else "", added=report.added,
        updated=report.updated, unchanged=report.unchanged, removed=report.removed, sync=sync,
    )
    return report
