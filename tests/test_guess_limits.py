"""Guessing limits: guesses counted against the student an album or ELS number points to,
check-and-record serialised on PostgreSQL, and "send the code again" limited.

The album lock's unlock and the CLI live in test_album_lockout.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.storage.db import make_engine, unit_of_work
from core.storage.models import GuessAttempt, Student
from tests.chat_driver import ChatDriver
from tests.factories import add_student, build_ctx, make_settings, student_pesel, wrong_pesels
from tests.support.databases import truncate_all

LOCKED_EN = "Too many failed attempts"
# Failures against one album or ELS number before it locks (by default twice an account's 5).
ALBUM_LIMIT = 10
NO_MATCH_EN = "doesn't match the student register"


def _student(ctx: AppContext, **overrides: object) -> tuple[Student, str]:
    with unit_of_work(ctx.engine) as session:
        student, pesel = add_student(session, ctx.box, **overrides)
        session.expunge(student)
        return student, pesel


def _try(ctx: AppContext, account: str, pesel: str, second: str, language: str = "en") -> ChatDriver:
    chat = ChatDriver(ctx, account=account)
    chat.start_in(language)
    chat.say(pesel)
    chat.say(second)
    return chat


# --- 1: wrong PESELs against a known album, from many accounts ------------------------------------

def test_wrong_pesels_against_one_album_from_many_accounts_lock_that_student(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    for n, wrong in enumerate(wrong_pesels(pesel, ALBUM_LIMIT)):  # a new account each time: no account locked
        attacker = _try(sqlite_ctx, f"attacker-{n}", wrong, student.album)
        assert "one-time code" not in attacker.text
    # The right PESEL from yet another account now waits too, and so does the owner.
    late = _try(sqlite_ctx, "attacker-late", pesel, student.album)
    assert LOCKED_EN in late.text and "05.10.2026 12:00" in late.text  # 09:00 UTC + 1 h, Warsaw
    assert late.outbox("binding-code") == []
    sqlite_ctx.clock.advance(hours=1, seconds=1)  # type: ignore[attr-defined]
    owner = _try(sqlite_ctx, "owner", pesel, student.album)
    assert "one-time code" in owner.text


def test_the_album_is_matched_as_typed_spaces_and_case_aside(sqlite_ctx: AppContext) -> None:
    _, pesel = _student(sqlite_ctx, album="ab500123")
    forms = ["AB500123", "ab 500123", "Ab500 123", "AB 500 123", "ab500123"] * 2
    for n, (wrong, typed) in enumerate(zip(wrong_pesels(pesel, ALBUM_LIMIT), forms, strict=True)):
        _try(sqlite_ctx, f"attacker-{n}", wrong, typed)
    assert LOCKED_EN in _try(sqlite_ctx, "owner", pesel, "AB500123").text


def test_wrong_pesels_against_an_els_number_lock_that_student(tmp_path: Path, sqlite_url: str,
                                                             clock: FixedClock) -> None:
    ctx = build_ctx(make_settings(tmp_path, database_url=sqlite_url, policy="els"), make_engine(sqlite_url), clock)
    _, pesel = _student(ctx, els_number="ELS-77001234")
    forms = ["ELS-77001234", "els 77001234", "77001234", "ELS77001234", "77 00 12 34"] * 2
    for n, (wrong, typed) in enumerate(zip(wrong_pesels(pesel, ALBUM_LIMIT), forms, strict=True)):
        _try(ctx, f"attacker-{n}", wrong, typed)
    assert LOCKED_EN in _try(ctx, "owner", pesel, "ELS-77001234").text
    ctx.engine.dispose()


def test_failures_by_the_pesel_and_by_the_album_add_up_for_one_student(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    for n in range(3):  # the right PESEL, wrong albums
        _try(sqlite_ctx, f"a-{n}", pesel, f"9{n:05d}")
    for n, wrong in enumerate(wrong_pesels(pesel, ALBUM_LIMIT - 3)):  # wrong PESELs, the right album
        _try(sqlite_ctx, f"b-{n}", wrong, student.album)
    assert LOCKED_EN in _try(sqlite_ctx, "owner", pesel, student.album).text


def test_a_known_and_an_unknown_album_answer_alike(sqlite_ctx: AppContext) -> None:
    """No oracle: the replies (and when the lock comes) say nothing of whether the album exists."""
    student, pesel = _student(sqlite_ctx)
    unknown_album = "999123"
    with Session(sqlite_ctx.engine) as session:
        assert session.exec(select(Student).where(Student.album == unknown_album)).first() is None
    known_texts, unknown_texts = [], []
    for n, wrong in enumerate(wrong_pesels(pesel, ALBUM_LIMIT + 2)):
        known_texts.append(_try(sqlite_ctx, f"k-{n}", wrong, student.album).text)
        unknown_texts.append(_try(sqlite_ctx, f"u-{n}", wrong, unknown_album).text)
    assert known_texts == unknown_texts
    assert LOCKED_EN not in known_texts[ALBUM_LIMIT - 2] and LOCKED_EN in known_texts[ALBUM_LIMIT - 1]
    assert all("@" not in text for text in known_texts)


def test_the_limit_keys_hold_no_pesel_and_no_album_in_clear(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    wrong = wrong_pesels(pesel, 1)[0]
    _try(sqlite_ctx, "a", wrong, student.album)
    with Session(sqlite_ctx.engine) as session:
        keys = [row.key for row in session.exec(select(GuessAttempt)).all()]
    assert keys
    assert not any(secret in key for key in keys for secret in (pesel, wrong, student.album))


def test_per_pesel_and_per_account_limits_still_hold(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    for n in range(5):  # one typed PESEL, a different wrong album and account each time
        _try(sqlite_ctx, f"p-{n}", pesel, f"8{n:05d}")
    assert LOCKED_EN in _try(sqlite_ctx, "owner", pesel, student.album).text
    _, other_pesel = _student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx, account="one-account")
    chat.start_in("en")
    for n in range(5):  # one account, different PESELs and albums each time
        chat.say(student_pesel(600 + n))
        chat.say(f"7{n:05d}")
    chat.say(other_pesel)
    assert LOCKED_EN in chat.text


# --- 2: concurrent turns on PostgreSQL --------------------------------------------------------------

@pytest.fixture
def pg_ctx(tmp_path: Path, postgres_database: str, clock: FixedClock) -> Iterator[AppContext]:
    engine = make_engine(postgres_database, pool_size=20, max_overflow=0)
    truncate_all(engine)
    yield build_ctx(make_settings(tmp_path, database_url=postgres_database), engine, clock)
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("guess", ["wrong_album", "wrong_pesel"])
def test_concurrent_guesses_from_many_accounts_stay_within_the_limit(pg_ctx: AppContext, guess: str) -> None:
    student, pesel = _student(pg_ctx)
    tries = 14
    guesses = wrong_pesels(pesel, tries)
    chats: list[ChatDriver] = []
    for n in range(tries):
        chat = ChatDriver(pg_ctx, account=f"racer-{n}")
        chat.start_in("en")
        chat.say(pesel if guess == "wrong_album" else guesses[n])
        chats.append(chat)
    barrier = threading.Barrier(tries)
    texts: list[str] = [""] * tries
    errors: list[BaseException] = []

    def race(n: int) -> None:
        try:
            barrier.wait()
            second = f"9{n:05d}" if guess == "wrong_album" else student.album
            texts[n] = "\n".join(reply.text for reply in chats[n].say(second))
        except BaseException as exc:  # reported below, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(tries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    # One typed PESEL (wrong albums) locks at an account's limit; one album (wrong PESELs) at its own.
    limits = pg_ctx.settings.limits
    limit = limits.guesses_per_hour if guess == "wrong_album" else limits.album_limit
    evaluated = sum(NO_MATCH_EN in text for text in texts)
    assert evaluated <= limit, texts
    assert all(NO_MATCH_EN in text or LOCKED_EN in text for text in texts), texts
    if guess == "wrong_album":  # one typed PESEL: its own count stays within the limit too
        with Session(pg_ctx.engine) as session:
            recorded = session.exec(select(GuessAttempt).where(
                GuessAttempt.kind == "identify", GuessAttempt.key == pg_ctx.box.pesel_hash(pesel))).all()
        assert len(recorded) <= limit


# --- 3: "send the code again" -----------------------------------------------------------------------

def test_resending_the_code_is_limited_per_student(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    chat = _try(sqlite_ctx, "a1", pesel, student.album)
    for _ in range(30):
        chat.press_anyway("code:resend")
    assert len(chat.outbox("binding-code")) == 3  # the first code and two more
    assert "You've asked for a code too many times" in chat.text
    assert "05.10.2026 11:15" in chat.text  # 09:00 UTC + 15 minutes, Warsaw
    # The last code mailed still binds.
    chat.say(chat.binding_code())
    assert "Done" in chat.text


def test_resend_limit_is_shared_by_accounts_and_lifts_after_the_window(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    first = _try(sqlite_ctx, "a1", pesel, student.album)
    first.press_anyway("code:resend")
    first.press_anyway("code:resend")
    # Identifying again from another account would mail a fourth code: refused the same way.
    second = _try(sqlite_ctx, "a2", pesel, student.album, language="pl")
    assert "Zbyt wiele próśb o kod" in second.text and "05.10.2026 11:15" in second.text
    assert len(second.outbox("binding-code")) == 3
    second.press_anyway("code:resend")
    assert "Zbyt wiele próśb o kod" in second.text
    assert len(second.outbox("binding-code")) == 3
    sqlite_ctx.clock.advance(minutes=15, seconds=1)  # type: ignore[attr-defined]
    second.press_anyway("code:resend")
    assert len(second.outbox("binding-code")) == 4
    assert "Jednorazowy kod został wysłany" in second.text


def test_resend_limit_is_per_account_across_students(sqlite_ctx: AppContext) -> None:
    one, one_pesel = _student(sqlite_ctx)
    two, two_pesel = _student(sqlite_ctx)
    chat = _try(sqlite_ctx, "switcher", one_pesel, one.album)
    chat.press_anyway("code:resend")
    chat.say("/cancel")
    chat.say(two_pesel)
    chat.say(two.album)  # the third code from this account
    chat.press_anyway("code:resend")
    assert "You've asked for a code too many times" in chat.text
    assert len(chat.outbox("binding-code")) == 3


def test_identifying_again_and_again_mails_no_more_codes(sqlite_ctx: AppContext) -> None:
    """Knowing a PESEL and an album must not be enough to flood the student's inbox from fresh accounts."""
    student, pesel = _student(sqlite_ctx)
    for account in ("x1", "x2", "x3", "x4", "x5"):
        _try(sqlite_ctx, account, pesel, student.album)
    chat = _try(sqlite_ctx, "x6", pesel, student.album)
    assert "You've asked for a code too many times" in chat.text
    assert len(chat.outbox("binding-code")) == 3


def test_forgetting_does_not_reset_the_resend_limit(sqlite_ctx: AppContext) -> None:
    student, pesel = _student(sqlite_ctx)
    chat = _try(sqlite_ctx, "a1", pesel, student.album)
    chat.press_anyway("code:resend")
    chat.press_anyway("code:resend")
    chat.say("/forget")
    chat.press("forget:yes")
    again = _try(sqlite_ctx, "a1", pesel, student.album)
    again.press_anyway("code:resend")
    assert "You've asked for a code too many times" in again.text
