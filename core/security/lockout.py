"""The identification lock on a student: its keys, the notice to the student, and lifting it.

Wrong identifications (PESEL plus album or ELS number) are counted per account and per
student (core.security.ratelimit); the counts of a student are kept under keyed hashes, never a
number in clear. Anyone who knows an album number can use up that number's attempts, so:
the number's limit is higher than an account's (`limits.album_guesses_per_hour`), the
student is told at their register address when a lock on them engages (at most once a
day: a lock kept up by renewed attempts is one lock), and staff can lift it
(`mleg students unlock ALBUM`). What the chat says stays the same whether the pair was
right or not: the notice goes only to the register address.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.app.errors import RateLimitedError
from core.credentials.compose import format_datetime, notice_email
from core.messaging import outbox
from core.security import ratelimit
from core.security.secrets_box import SecretBox
from core.storage import audit
from core.storage.models import ChatLink, GuessAttempt, Student
from core.students.eligibility import normalize_els_number

__all__ = ["NOTICE_EVERY", "notify_locked", "number_key", "second_number", "student_by_number", "unlock"]

# One notice per student within this time, however often the lock engages again.
NOTICE_EVERY = timedelta(days=1)
_NOTICE_KIND = "lock_notice"


def second_number(by: str, number: str) -> str:
    """An ELS or album number as compared: typed and register forms alike."""
    return normalize_els_number(number) if by == "els" else re.sub(r"\s+", "", number).upper()


def number_key(box: SecretBox, by: str, number: str | None) -> str | None:
    """The guess-count key of an album or ELS number (keyed: the table holds no number in clear)."""
    normalized = second_number(by, number or "")
    return box.keyed_hash(f"identify-{by}", normalized) if normalized else None


def student_by_number(session: Session, by: str, number: str) -> Student | None:
    """The student holding a typed album or ELS number, compared as `second_number` does.

    Only asked when a lock engages (rare), so a scan over the numbers is affordable where the
    register's form differs from the typed one.
    """
    wanted = second_number(by, number)
    if not wanted:
        return None
    field = "els_number" if by == "els" else "album"
    column = col(getattr(Student, field))
    exact = session.exec(select(Student).where(column == number.strip())).first()
    if exact is not None and second_number(by, getattr(exact, field) or "") == wanted:
        return exact
    for student_id, value in session.execute(sa.select(col(Student.id), column).where(column.is_not(None))):
        if value and second_number(by, value) == wanted:
            return session.get(Student, student_id)
    return None


def _language(ctx: AppContext, session: Session, student: Student) -> str:
    """The language the student last chose in a chat, else the default (as the jobs' e-mails do)."""
    link = session.exec(select(ChatLink).where(ChatLink.student_id == student.id)
                        .order_by(sa.desc(col(ChatLink.bound_at)), sa.desc(col(ChatLink.id)))).first()
    return link.language if link is not None else ctx.settings.default_language


def notify_locked(ctx: AppContext, session: Session, student: Student, until: datetime, *, now: datetime) -> bool:
    """Queue the lock notice to the student's register address, unless one went within NOTICE_EVERY."""
    scope = [("student", f"student:{student.id}")]
    try:
        ratelimit.check_allowed(session, _NOTICE_KIND, scope, now=now, limit=1, window=NOTICE_EVERY)
    except RateLimitedError:  # told already about this lock
        return False
    ratelimit.record(session, _NOTICE_KIND, scope, now=now)
    language = _language(ctx, session, student)
    message = notice_email(
        ctx.catalog, "email.identify_locked", language=language, first_name=student.first_name,
        university=ctx.settings.university.name, until=format_datetime(until), contact=ctx.contact,
    )
    outbox.enqueue(session, ctx.box, key=f"lock-notice:{student.id}:{uuid.uuid4().hex}", channel="email",
                   recipient=student.email, kind="lock-notice", message=message, now=now, language=language,
                   student_id=student.id)
    audit.record(session, at=now, actor="system", action="student.lock_notified", student_id=student.id)
    return True


def _student_scopes(box: SecretBox, student: Student) -> list[tuple[str, str, str]]:
    """(kind, scope, key) of every count that locks this student out of binding a chat."""
    keys = [("identify", "student", key) for key in (
        student.pesel_hash, number_key(box, "album", student.album), number_key(box, "els", student.els_number),
    ) if key]
    keys.append(("chat_code", "student", f"student:{student.id}"))
    keys.append((_NOTICE_KIND, "student", f"student:{student.id}"))  # a new lock is told again
    return keys


def unlock(ctx: AppContext, session: Session, student: Student, *, actor: str) -> int:
    """Lift the identification lock on a student (staff); returns how many failures were cleared.

    Only the counts against the student go: the accounts that made the wrong guesses stay locked.
    """
    cleared = 0
    for kind, scope, key in _student_scopes(ctx.box, student):
        deleted = session.execute(sa.delete(GuessAttempt).where(
            col(GuessAttempt.kind) == kind, col(GuessAttempt.scope) == scope, col(GuessAttempt.key) == key))
        if kind != _NOTICE_KIND:
            cleared += deleted.rowcount or 0
    audit.record(session, at=ctx.clock.now(), actor=actor, action="student.unlocked", student_id=student.id,
                 cleared=cleared)
    return cleared
