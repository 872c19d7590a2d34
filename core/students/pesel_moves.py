"""A PESEL that moves, in a register sync, from an album missing from the file to a new album.

That is the same student on a new album (second-cycle studies, a transfer): their live credential
follows them when the new album may have one, and so do the chat accounts bound to the old album
unless a live credential stays behind on it (it then ends there as a removed student's does).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import NamedTuple

from sqlmodel import Session, col, select

from core.conversation.rebind import rebind_conversations
from core.credentials.service import live_credential
from core.storage import audit
from core.storage.models import ChatLink, CredentialState, Student
from core.students.eligibility import Policy, check_eligibility
from core.students.email_change import EmailChange
from core.students.register_csv import RegisterRow, masked_cell

__all__ = ["Known", "chats_follow_the_student", "follow_the_student", "new_album_ids", "pesel_claims"]


class Known(NamedTuple):
    """A student already in the register, as an import compares it."""

    id: int
    digest: str
    pesel_hash: str | None
    status: str
    email: str


def pesel_claims(
    rows: list[RegisterRow], existing: dict[str, Known], *, sync: bool
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
            new, old = masked_cell(row.album), masked_cell(holder)
            problems.append((row.line, (
                f"album {new} has the PESEL of album {old}, already in the register and not in this "
                f"file: if {new} is the same student's new album (e.g. second-cycle studies), import the "
                f"whole register with --sync (album {old} then leaves it as students missing from the "
                f"file do, and its PESEL moves to {new}); otherwise correct the PESEL"
            )))
    return released, problems


def new_album_ids(session: Session, released: list[tuple[RegisterRow, str]]) -> dict[str, int]:
    """The new albums' student ids, once written (both steps that follow the student need them)."""
    ids = dict(session.exec(
        select(Student.album, Student.id).where(col(Student.album).in_([row.album for row, _ in released]))
    ).all())
    return {album: student_id for album, student_id in ids.items() if student_id is not None}


def follow_the_student(
    session: Session,
    released: list[tuple[RegisterRow, str]],
    existing: dict[str, Known],
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


def chats_follow_the_student(
    session: Session,
    released: list[tuple[RegisterRow, str]],
    existing: dict[str, Known],
    ids: dict[str, int],
    *,
    now: datetime,
    actor: str,
) -> int:
    """A PESEL moved from an album missing from the file to the student's new album: the chat
    accounts bound to the old album are bound to the new one, and their conversations' state with
    them (core.conversation.rebind), so the next /status shows the new album and not the removed one. Not while a live
    credential stays behind on the old album (the new one may not have it, or has its own): it
    ends there as a removed student's does, and its notices go to the chats bound to that album.
    Returns the chat accounts moved."""
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
        conversations = rebind_conversations(session, links, old_id, new_id, now=now)
        audit.record(
            session, at=now, actor=actor, action="chat.moved", student_id=new_id, from_student_id=old_id,
            chats=len(links), conversations=conversations,
            reason="the student's PESEL moved to a new album in a register sync",
        )
        moved += len(links)
    session.flush()
    return moved
