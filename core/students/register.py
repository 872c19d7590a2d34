"""The student register (rejestr studentów): import or sync a validated file (core.students.register_csv).

A sync marks the active students missing from the file removed (skreśleni) today; a missing
graduated or suspended student keeps that status. A PESEL may move to another album in
one import: between albums both in the file, or, in a sync, from an album missing from
the file to a new one (core.students.pesel_moves). A changed e-mail address kills whatever was
meant for the old one (core.students.email_change).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlmodel import Session, col

from core.app.errors import MassRemovalError, MlegError, RegisterImportError
from core.app.settings_sections import DEFAULT_MAX_REMOVED_SHARE
from core.storage import audit
from core.storage.models import Student, StudentStatus
from core.students.eligibility import Policy
from core.students.email_change import EmailChange, apply_email_changes
from core.students.pesel_moves import (
    Known,
    chats_follow_the_student,
    follow_the_student,
    new_album_ids,
    pesel_claims,
)
from core.students.register_csv import RegisterRow

if TYPE_CHECKING:
    from core.app.context import AppContext

__all__ = ["ImportReport", "RegisterWriteError", "import_register", "mass_removal_reason"]

_BATCH = 2000


class RegisterWriteError(MlegError):
    """The database refused the import's writes (a constraint, a value too long): nothing was changed.

    Its message names the kind of refusal only: the database's own message quotes the row.
    """




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


def _missing(existing: dict[str, Known], present: set[str]) -> list[tuple[str, int]]:
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
    existing: dict[str, Known],
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
        album: Known(student_id or 0, digest, pesel_hash, status, email)
        for student_id, album, digest, pesel_hash, status, email in session.execute(
            sa.select(col(Student.id), col(Student.album), col(Student.row_digest), col(Student.pesel_hash),
                      col(Student.status), col(Student.email))
        ).all()
    }
    released, conflicts = pesel_claims(rows, existing, sync=sync)
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

    plan = _plan(rows, existing, released, now=now)
    report.unchanged = plan.unchanged
    inserts, updates, changes = plan.inserts, plan.updates, plan.changes
    try:
        _write(session, plan.releasing, released, updates, inserts, existing, now=now)
    except (sa_exc.IntegrityError, sa_exc.DataError) as exc:
        kind = type(getattr(exc, "orig", None) or exc).__name__
        raise RegisterWriteError(
            f"the database refused the register import ({kind}); nothing was changed"
        ) from None
    report.added, report.updated = len(inserts), len(updates)

    if sync:
        _mark_removed(session, [student_id for _, student_id in missing], today=today, now=now)
        report.removed = len(missing)
        report.albums_removed = sorted(album for album, _ in missing)
    if released:
        policy = Policy(ctx.settings.policy) if ctx is not None else Policy.STANDALONE
        report.pesel_moved = len(released)
        new_ids = new_album_ids(session, released)
        report.credentials_moved, more = follow_the_student(
            session, released, existing, new_ids, now=now, today=today, actor=actor, policy=policy)
        changes += more
        for row, holder in released:
            audit.record(session, at=now, actor=actor, action="register.pesel_moved",
                         student_id=existing[holder].id, to_album=row.album, from_album=holder)
    handled = apply_email_changes(session, changes, now=now, actor=actor, ctx=ctx, dry_run=dry_run)
    if released:  # after the address changes: a credential they revoked no longer holds the chat back
        report.chats_moved = chats_follow_the_student(session, released, existing, new_ids, now=now, actor=actor)
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


@dataclass
class _Plan:
    """What an import writes: new and changed rows, address changes, PESELs given up."""

    inserts: list[dict[str, object]] = field(default_factory=list)
    updates: list[dict[str, object]] = field(default_factory=list)
    changes: list[EmailChange] = field(default_factory=list)
    releasing: list[int] = field(default_factory=list)
    unchanged: int = 0


def _plan(rows: list[RegisterRow], existing: dict[str, Known], released: list[tuple[RegisterRow, str]], *,
          now: datetime) -> _Plan:
    # Rows giving up their PESEL in this import: released first, so no row ever takes one
    # another still holds (a PESEL moving between albums, two albums swapping theirs).
    plan = _Plan(releasing=[existing[holder].id for _, holder in released])
    for row in rows:
        found = existing.get(row.album)
        if found is None:
            plan.inserts.append({**_row_values(row), "created_at": now, "updated_at": now})
        elif found.digest != row.digest:
            plan.updates.append({**_row_values(row), "id": found.id, "updated_at": now})
            if found.pesel_hash and found.pesel_hash != row.pesel_hash:
                plan.releasing.append(found.id)
            if found.email.lower() != row.email.lower():
                plan.changes.append(EmailChange(student_id=found.id, old_email=found.email, new_email=row.email))
        else:
            plan.unchanged += 1
    return plan


def _mark_removed(session: Session, student_ids: list[int], *, today: date, now: datetime) -> None:
    for start in range(0, len(student_ids), _BATCH):
        session.execute(
            sa.update(Student)
            .where(col(Student.id).in_(student_ids[start : start + _BATCH]))
            .values(status=StudentStatus.REMOVED, removed_on=today, updated_at=now, row_digest="")
        )


def _write(
    session: Session,
    releasing: list[int],
    released: list[tuple[RegisterRow, str]],
    updates: list[dict[str, object]],
    inserts: list[dict[str, object]],
    existing: dict[str, Known],
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
