"""Follow-up defects: the activation deadline past the end of validity, a staff revocation's
"apply again" after removal or graduation, a language changed in a bound chat."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from core import credentials as service
from core.compose import format_datetime
from core.context import AppContext
from core.db import make_engine, unit_of_work
from core.jobs import reminders, sweep
from core.lifecycle import EndReason
from core.models import ChatLink, Credential, OutboxMessage, Student
from core.outbox import open_body
from core.semester import end_of_day
from tests.chat_driver import ChatDriver
from tests.cli_helpers import cli_environment, run
from tests.factories import add_student, issue
from tests.support.lifecycle import at, outbox


def _bound(ctx: AppContext, language: str = "pl", channel: str = "console",
           student: tuple[Student, str] | None = None) -> tuple[ChatDriver, Student]:
    if student is None:
        with unit_of_work(ctx.engine) as session:
            student = add_student(session, ctx.box)
    row, pesel = student
    chat = ChatDriver(ctx, channel=channel)
    chat.identify(pesel, row.album, language)
    return chat, row


def _credential(ctx: AppContext) -> Credential:
    with Session(ctx.engine) as session:
        return session.exec(select(Credential).order_by(col(Credential.id).desc())).first()  # type: ignore[return-value]


def _rows(ctx: AppContext, kind: str) -> list[OutboxMessage]:
    return [row for row in outbox(ctx) if row.kind == kind]


# --- 1: the activation deadline never outlasts the credential (standalone policy) -----------------

# With the default 30-day window a stand-alone credential always outlasts its activation data:
# issued in the winter semester (October to February) it is valid until 31 March, in the summer
# semester (March to September) until 31 October, 31 days or more either way. The cut happens
# where a university gives the data longer (activation_window_days): with 60 days, data issued on
# 15 September would live to 14 November, past the credential's 31 October.
LONG_WINDOW_DAYS = 60
LATE_IN_THE_SUMMER_SEMESTER = "2026-09-15T10:00:00+02:00"


def _long_window(ctx: AppContext) -> None:
    """Before any ChatDriver is made: the conversation reads the window when it starts."""
    ctx.settings.credential.activation_window_days = LONG_WINDOW_DAYS
    at(ctx, LATE_IN_THE_SUMMER_SEMESTER)


def test_standalone_activation_deadline_is_cut_to_the_end_of_validity(ctx: AppContext) -> None:
    """15 September, a 60-day window: valid until 31 October, so the data cannot live 60 days (to 14 November)."""
    _long_window(ctx)
    _, credential_id = issue(ctx)
    with Session(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None and credential.policy == "standalone"
        assert credential.valid_until == date(2026, 10, 31)
        assert credential.activation_deadline == end_of_day(date(2026, 10, 31))
    [email] = _rows(ctx, "activation")
    text = open_body(ctx.box, email).text
    assert "ważne do 31.10.2026 23:59" in text and "valid until 31.10.2026 23:59" in text
    assert "14.11.2026" not in text


@pytest.mark.parametrize("moment", [
    "2026-09-30T23:59:00+02:00",  # the last minute of the summer semester: valid until 31 October
    "2027-02-28T23:59:00+01:00",  # the last minute of the winter semester: valid until 31 March
    "2028-02-29T23:59:00+01:00",  # ... in a leap year
])
def test_default_window_is_never_cut_under_the_standalone_policy(sqlite_ctx: AppContext, moment: str) -> None:
    """The tightest moments of the year still leave the full 30 days (the cut needs a longer window or an ELS card)."""
    at(sqlite_ctx, moment)
    _, credential_id = issue(sqlite_ctx)
    with Session(sqlite_ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        assert credential.activation_deadline == sqlite_ctx.clock.now() + timedelta(days=30)
        assert credential.activation_deadline < end_of_day(credential.valid_until)


def test_activation_deadline_stays_30_days_when_validity_lasts_longer(ctx: AppContext) -> None:
    at(ctx, "2026-11-05T10:00:00+01:00")  # valid until 31 March
    _, credential_id = issue(ctx)
    with Session(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        assert credential.activation_deadline == ctx.clock.now() + timedelta(days=30)


def test_the_student_is_told_the_earlier_deadline_in_the_chat(sqlite_ctx: AppContext) -> None:
    _long_window(sqlite_ctx)
    chat, _ = _bound(sqlite_ctx, "en")
    chat.press("menu:request")
    assert "valid until 31.10.2026 23:59" in chat.text and f"{LONG_WINDOW_DAYS} days" not in chat.text
    chat.press("confirm:yes:request")
    assert "by 31.10.2026 23:59; it will be valid until 31.10.2026" in chat.text
    chat.say("/status")
    assert "by 31.10.2026 23:59" in chat.text


def test_a_full_window_is_still_announced_in_days(sqlite_ctx: AppContext) -> None:
    at(sqlite_ctx, "2026-11-05T10:00:00+01:00")
    chat, _ = _bound(sqlite_ctx, "en")
    chat.press("menu:request")
    assert "You have 30 days to activate." in chat.text
    chat.press("confirm:yes:request")
    assert f"by {format_datetime(sqlite_ctx.clock.now() + timedelta(days=30))};" in chat.text


def test_activation_reminder_names_the_earlier_deadline(sqlite_ctx: AppContext) -> None:
    _long_window(sqlite_ctx)
    issue(sqlite_ctx)
    at(sqlite_ctx, "2026-10-30T10:00:00+01:00")
    reminders(sqlite_ctx)
    [reminder] = _rows(sqlite_ctx, "reminder")
    assert reminder.idempotency_key.endswith(":activation-1")
    assert "31.10.2026 23:59" in open_body(sqlite_ctx.box, reminder).text


# --- 2: a staff revocation for removal or graduation does not say "apply again" -------------------

def _revoke_by_staff(ctx: AppContext, reason: EndReason) -> str:
    _, credential_id = issue(ctx)
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        service.revoke(ctx, session, credential, reason=reason, actor="staff:test")  # as `mleg credentials revoke`
    [notice] = _rows(ctx, "revoked")
    return open_body(ctx.box, notice).text


@pytest.mark.parametrize(("reason", "phrases"), [
    (EndReason.REMOVAL, ("removed from the student list", "skreślono Cię z listy studentów")),
    (EndReason.GRADUATION, ("graduation", "ukończenie studiów")),
    (EndReason.REMOVAL_GRACE_ENDED, ("since removal from the student list", "od skreślenia z listy studentów")),
])
def test_staff_revocation_for_removal_or_graduation_points_to_the_deans_office(
    ctx: AppContext, reason: EndReason, phrases: tuple[str, str],
) -> None:
    text = _revoke_by_staff(ctx, reason)
    assert "apply again in the chat" not in text and "złóż nowy wniosek w czacie" not in text
    assert "dean's office" in text and "dziekanatem" in text
    assert all(phrase in text for phrase in phrases), text


@pytest.mark.parametrize("reason", [EndReason.LOST_PHONE, EndReason.NEW_PHONE, EndReason.STUDENT_REQUEST,
                                    EndReason.STAFF])
def test_other_staff_revocations_still_invite_a_new_application(ctx: AppContext, reason: EndReason) -> None:
    text = _revoke_by_staff(ctx, reason)
    assert "apply again in the chat" in text and "złóż nowy wniosek w czacie" in text


def test_cli_revocation_for_removal_points_to_the_deans_office(tmp_path: Path, sqlite_url: str,
                                                              sqlite_ctx: AppContext) -> None:
    _, credential_id = issue(sqlite_ctx)
    sqlite_ctx.engine.dispose()
    result = run(["credentials", "revoke", str(credential_id), "--reason", "removal", "--yes", "--by", "jk"],
                 cli_environment(tmp_path, sqlite_url))
    assert result.returncode == 0, result.stderr
    engine = make_engine(sqlite_url)
    try:
        with Session(engine) as session:
            notice = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "revoked")).one()
        text = open_body(sqlite_ctx.box, notice).text
    finally:
        engine.dispose()
    assert "apply again in the chat" not in text and "dean's office" in text


@pytest.mark.parametrize(("reason", "language", "says", "not_says"), [
    ("removal", "en", "dean's office", "You can apply again."),
    ("graduation", "pl", "dziekanatem", "Możesz złożyć nowy wniosek."),
    ("removal_grace_ended", "en", "dean's office", "You can apply again."),
    ("lost_phone", "en", "You can apply again.", "dean's office"),
])
def test_chat_status_after_revocation_matches_the_reason(
    sqlite_ctx: AppContext, reason: str, language: str, says: str, not_says: str,
) -> None:
    chat, _ = _bound(sqlite_ctx, language)
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    with unit_of_work(sqlite_ctx.engine) as session:
        credential = session.exec(select(Credential)).one()
        service.revoke(sqlite_ctx, session, credential, reason=reason, actor="staff:test")
    chat.say("/status")
    assert says in chat.text and not_says not in chat.text, chat.text


# --- 3: a language changed in a bound chat reaches the jobs ------------------------------------------

def _change_language(chat: ChatDriver, language: str, *, by_command: bool) -> None:
    if by_command:
        chat.say("/language")
    else:
        chat.say("/status")
        chat.say("/lang")
    chat.press(f"lang:{language}")


@pytest.mark.parametrize("by_command", [True, False])
def test_language_changed_in_a_bound_chat_is_saved_on_the_link(sqlite_ctx: AppContext, by_command: bool) -> None:
    chat, _ = _bound(sqlite_ctx, "pl")
    _change_language(chat, "en", by_command=by_command)
    assert "Language: English." in chat.text
    with Session(sqlite_ctx.engine) as session:
        [link] = session.exec(select(ChatLink)).all()
    assert link.language == "en"


def test_chat_reminder_after_the_change_comes_in_the_new_language(ctx: AppContext) -> None:
    at(ctx, "2026-11-05T10:00:00+01:00")  # deadline 5 December 10:00
    chat, _ = _bound(ctx, "pl", channel="telegram")
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    _change_language(chat, "en", by_command=True)
    at(ctx, "2026-11-28T10:00:00+01:00")
    reminders(ctx)
    [reminder] = _rows(ctx, "reminder")
    assert (reminder.channel, reminder.language) == ("telegram", "en")
    assert "Your mobile student ID (mLegitymacja) is waiting to be activated" in open_body(ctx.box, reminder).text


def test_e_mail_after_the_change_comes_in_the_new_language(sqlite_ctx: AppContext) -> None:
    at(sqlite_ctx, "2026-11-05T10:00:00+01:00")
    chat, _ = _bound(sqlite_ctx, "en")  # the console: reminders go by e-mail
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    _change_language(chat, "pl", by_command=True)
    at(sqlite_ctx, "2026-11-28T10:00:00+01:00")
    reminders(sqlite_ctx)
    [reminder] = _rows(sqlite_ctx, "reminder")
    assert (reminder.channel, reminder.language) == ("email", "pl")
    assert open_body(sqlite_ctx.box, reminder).text.startswith("Dzień dobry")


def test_the_newest_choice_wins_over_a_link_bound_later(sqlite_ctx: AppContext) -> None:
    """Two accounts of one student: the language chosen last, not the account bound last, is the e-mail's."""
    at(sqlite_ctx, "2026-11-05T10:00:00+01:00")
    with unit_of_work(sqlite_ctx.engine) as session:
        student = add_student(session, sqlite_ctx.box)
    first, _ = _bound(sqlite_ctx, "pl", channel="telegram", student=student)
    sqlite_ctx.clock.advance(minutes=5)  # type: ignore[attr-defined]
    second, _ = _bound(sqlite_ctx, "pl", channel="console", student=student)
    second.press("menu:request")
    second.press("confirm:yes:request")
    sqlite_ctx.clock.advance(minutes=5)  # type: ignore[attr-defined]
    _change_language(first, "en", by_command=True)
    sqlite_ctx.clock.advance(days=31)  # type: ignore[attr-defined]
    assert sweep(sqlite_ctx)["activation_expired"] == 1
    notices = {row.channel: row for row in _rows(sqlite_ctx, "activation_expired")}
    assert (notices["email"].language, notices["telegram"].language) == ("en", "en")
    assert open_body(sqlite_ctx.box, notices["email"]).text.startswith("Hello")
