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
from core.errors import RegisterImportError
from core.models import Student, StudentStatus, StudyLevel
from core.pesel import PeselProblem, check_pesel, mask_pesel
from core.secrets_box import SecretBox

__all__ = ["HEADER", "ImportReport", "RegisterRow", "import_register", "parse_register"]

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


def _parse_date(value: str, column: str, problems: list[str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        problems.append(f"{column} {value!r} is not an ISO date (YYYY-MM-DD)")
        return None


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
    if tuple(h.strip() for h in header) != HEADER:
        raise RegisterImportError(
            [(1, f"header must be exactly: {','.join(HEADER)} (got: {','.join(header)})")]
        )
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
            line_problems.append(f"duplicate album {album} (first on line {seen_album[album]})")
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
            line_problems.append(f"e-mail {values['email']!r} is malformed")
        elif not _domain_allowed(email, email_domains):
            line_problems.append(
                f"e-mail domain of {values['email']!r} is not a university domain "
                f"({', '.join(email_domains)})"
            )
        if values["study_level"] not in levels:
            line_problems.append(
                f"study_level {values['study_level']!r} is not one of {', '.join(sorted(levels))}"
            )
        if values["status"] not in statuses:
            line_problems.append(
                f"status {values['status']!r} is not one of {', '.join(sorted(statuses))}"
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


def import_register(
    session: Session,
    rows: list[RegisterRow],
    *,
    now: datetime,
    today: date,
    sync: bool = False,
    actor: str = "cli",
    source: str = "",
) -> ImportReport:
    """Add new students, update changed ones; with `sync`, mark the missing ones removed today."""
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
        present = {row.album for row in rows}
        missing = [
            (album, student_id)
            for album, (student_id, _, _, status) in existing.items()
            if album not in present and status != StudentStatus.REMOVED
        ]
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
