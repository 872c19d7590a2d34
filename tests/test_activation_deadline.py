"""The activation deadline never outlasts the credential it activates (the standalone policy with a
longer window), and the student is told the earlier of the two in the chat, e-mail and reminders."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlmodel import Session, select

from core.app.context import AppContext
from core.credentials.compose import format_datetime
from core.jobs import reminders, sweep
from core.messaging.outbox import open_body
from core.storage.models import (
    Credential,
    CredentialEvent,
)
from core.students.semester import end_of_day
from tests.factories import issue
from tests.support.chat import all_credentials, apply_in_chat, bound_chat
from tests.support.lifecycle import at, queued

# --- the activation deadline never outlasts the credential (standalone policy) -----------------

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
    [email] = queued(ctx, "activation")
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
    chat, _ = bound_chat(sqlite_ctx, "en")
    chat.press("menu:request")
    assert "valid until 31.10.2026 23:59" in chat.text and f"{LONG_WINDOW_DAYS} days" not in chat.text
    chat.press("confirm:yes:request")
    assert "by 31.10.2026 23:59; it will be valid until 31.10.2026" in chat.text
    chat.say("/status")
    assert "by 31.10.2026 23:59" in chat.text


def test_a_full_window_is_still_announced_in_days(sqlite_ctx: AppContext) -> None:
    at(sqlite_ctx, "2026-11-05T10:00:00+01:00")
    chat, _ = bound_chat(sqlite_ctx, "en")
    chat.press("menu:request")
    assert "You have 30 days to activate." in chat.text
    chat.press("confirm:yes:request")
    assert f"by {format_datetime(sqlite_ctx.clock.now() + timedelta(days=30))};" in chat.text


def test_activation_reminder_names_the_earlier_deadline(sqlite_ctx: AppContext) -> None:
    _long_window(sqlite_ctx)
    issue(sqlite_ctx)
    at(sqlite_ctx, "2026-10-30T10:00:00+01:00")
    reminders(sqlite_ctx)
    [reminder] = queued(sqlite_ctx, "reminder")
    assert reminder.idempotency_key.endswith(":activation-1")
    assert "31.10.2026 23:59" in open_body(sqlite_ctx.box, reminder).text


# --- activation data past its deadline -------------------------------------------------------

def test_activation_past_its_deadline_expires_when_the_student_asks(ctx: AppContext) -> None:
    """On SQLite and PostgreSQL: the turn locks the row as the sweep does."""
    chat, _ = bound_chat(ctx, "en")
    apply_in_chat(chat)
    ctx.clock.advance(days=30, minutes=1)  # type: ignore[attr-defined]
    chat.say("/status")
    assert "The activation data from your last application expired unused" in chat.text
    assert "Activate" not in chat.text and "menu:request" in chat.buttons
    [ended] = all_credentials(ctx)
    assert (ended.state, ended.end_reason, ended.code_hash) == ("expired", "activation_window_passed", None)
    with Session(ctx.engine) as session:
        events = session.exec(select(CredentialEvent).where(CredentialEvent.credential_id == ended.id)).all()
    assert [(e.from_state, e.to_state, e.reason) for e in events][-1] == (
        "pending_activation", "expired", "activation_window_passed")
    assert sweep(ctx)["activation_expired"] == 0  # one move, not two
    chat.say("/request")
    assert "already have activation data" not in chat.text and "confirm:yes:request" in chat.buttons
    chat.press("confirm:yes:request")
    assert "Application accepted" in chat.text
    assert [c.state for c in all_credentials(ctx)] == ["expired", "pending_activation"]


def test_request_straight_after_the_deadline_is_a_new_application(sqlite_ctx: AppContext) -> None:
    chat, _ = bound_chat(sqlite_ctx)
    apply_in_chat(chat)
    sqlite_ctx.clock.advance(days=31)  # type: ignore[attr-defined]
    chat.say("/request")
    assert "Masz już wysłane dane aktywacyjne" not in chat.text and "confirm:yes:request" in chat.buttons


def test_activation_still_within_its_deadline_stays_pending(sqlite_ctx: AppContext) -> None:
    chat, _ = bound_chat(sqlite_ctx)
    apply_in_chat(chat)
    sqlite_ctx.clock.advance(days=29)  # type: ignore[attr-defined]  # a day before the 30-day deadline
    chat.say("/status")
    assert "Aktywuj mLegitymację w mObywatelu do" in chat.text
    assert [c.state for c in all_credentials(sqlite_ctx)] == ["pending_activation"]
