"""A stranger who knows an album number cannot keep its student locked out quietly: the album needs
more failures than an account, the student hears of the lock at the register address (once per
lock), and staff lift it with `mleg students unlock ALBUM`, recorded in the audit trail."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.messaging.outbox import open_body
from core.storage.db import unit_of_work
from core.storage.models import AuditEvent, OutboxMessage, Student
from tests.chat_driver import ChatDriver
from tests.cli_helpers import cli_environment, run
from tests.factories import add_student, wrong_pesels

LOCKED_EN = "Too many failed attempts"
CODE_SENT_EN = "one-time code"


def _student(ctx: AppContext, **overrides: object) -> tuple[Student, str]:
    with unit_of_work(ctx.engine) as session:
        student, pesel = add_student(session, ctx.box, **overrides)
        session.expunge(student)
        return student, pesel


def _try(ctx: AppContext, account: str, pesel: str, second: str) -> ChatDriver:
    chat = ChatDriver(ctx, account=account)
    chat.start_in("en")
    chat.say(pesel)
    chat.say(second)
    return chat


def _lock_notices(ctx: AppContext) -> list[OutboxMessage]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(OutboxMessage).where(OutboxMessage.kind == "lock-notice")
                                 .order_by(col(OutboxMessage.id))).all())


def _lock_album(ctx: AppContext, student: Student, pesel: str, prefix: str = "stranger") -> None:
    for n, wrong in enumerate(wrong_pesels(pesel, ctx.settings.limits.album_limit)):
        _try(ctx, f"{prefix}-{n}", wrong, student.album)


def test_an_accounts_worth_of_failures_does_not_lock_the_album(sqlite_ctx: AppContext) -> None:
    limits = sqlite_ctx.settings.limits
    assert limits.album_limit > limits.guesses_per_hour
    student, pesel = _student(sqlite_ctx)
    for n, wrong in enumerate(wrong_pesels(pesel, limits.guesses_per_hour)):
        _try(sqlite_ctx, f"stranger-{n}", wrong, student.album)
    owner = _try(sqlite_ctx, "owner", pesel, student.album)
    assert LOCKED_EN not in owner.text and CODE_SENT_EN in owner.text
    assert _lock_notices(sqlite_ctx) == []


def test_the_student_is_told_once_when_strangers_lock_their_album(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    _lock_album(sqlite_ctx, student, pesel)
    [notice] = _lock_notices(sqlite_ctx)
    assert notice.recipient == student.email and notice.channel == "email" and notice.student_id == student.id
    message = open_body(sqlite_ctx.box, notice)
    # Both languages, and when it lifts (09:00 UTC + 1 h, Warsaw time).
    assert "paused until 05.10.2026 12:00" in message.text and "wstrzymane do 05.10.2026 12:00" in message.text
    # More tries while it holds, and the lock kept up as the window slides: no second notice.
    for n in range(3):
        assert LOCKED_EN in _try(sqlite_ctx, f"late-{n}", pesel, student.album).text
    sqlite_ctx.clock.advance(minutes=61)  # type: ignore[attr-defined]
    _lock_album(sqlite_ctx, student, pesel, prefix="again")
    assert len(_lock_notices(sqlite_ctx)) == 1


def test_a_lock_by_the_pesel_tells_its_student_and_an_unknown_album_tells_nobody(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    for n in range(sqlite_ctx.settings.limits.guesses_per_hour):  # the right PESEL, wrong albums
        _try(sqlite_ctx, f"p-{n}", pesel, f"8{n:05d}")
    [notice] = _lock_notices(sqlite_ctx)
    assert notice.recipient == student.email
    _, other_pesel = _student(sqlite_ctx)
    for n, wrong in enumerate(wrong_pesels(other_pesel, sqlite_ctx.settings.limits.album_limit)):
        _try(sqlite_ctx, f"u-{n}", wrong, "999777")  # nobody's album
    assert len(_lock_notices(sqlite_ctx)) == 1


@pytest.mark.process
def test_staff_unlock_lets_the_student_in_and_is_audited(tmp_path: Path, sqlite_url: str,
                                                         sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    _lock_album(sqlite_ctx, student, pesel)
    assert LOCKED_EN in _try(sqlite_ctx, "owner-1", pesel, student.album).text
    env = cli_environment(tmp_path, sqlite_url)

    result = run(["students", "unlock", student.album, "--by", "anna.k"], env)

    assert result.returncode == 0, result.stderr
    assert f"album {student.album}: lock lifted" in result.stdout
    owner = _try(sqlite_ctx, "owner-2", pesel, student.album)
    assert CODE_SENT_EN in owner.text and LOCKED_EN not in owner.text
    with Session(sqlite_ctx.engine) as session:
        [event] = session.exec(select(AuditEvent).where(AuditEvent.action == "student.unlocked")).all()
    assert event.actor == "staff:anna.k" and event.student_id == student.id
    # The strangers' accounts stay as they were; a lock engaging again is told again.
    again = run(["students", "unlock", student.album], env)
    assert again.returncode == 0 and "nothing to lift" in again.stdout


@pytest.mark.process
def test_unlock_of_an_unknown_album_is_one_error_line(tmp_path: Path, sqlite_url: str) -> None:
    result = run(["students", "unlock", "999999"], cli_environment(tmp_path, sqlite_url))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: no student with album '999999' in the register"


def test_the_album_limit_follows_the_account_limit_and_must_exceed_it(tmp_path: Path) -> None:
    from core.app.errors import ConfigurationError
    from tests.factories import make_settings

    assert make_settings(tmp_path).limits.album_limit == 10
    # An installation that had raised the account limit still starts, the album's above it.
    assert make_settings(tmp_path, limits={"guesses_per_hour": 12}).limits.album_limit == 24
    try:
        make_settings(tmp_path, limits={"album_guesses_per_hour": 5})
    except ConfigurationError as refused:
        assert "album_guesses_per_hour (5) must be more than guesses_per_hour (5)" in str(refused)
    else:
        raise AssertionError("an album limit no higher than an account's was accepted")
