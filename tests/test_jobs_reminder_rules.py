"""What a QA walk through a year found: e-mail language, ELS renewal advice, night reminders,
days left, and the revocation notice of students who may not apply again."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from core.app.clock import WARSAW
from core.app.context import AppContext
from core.app.errors import ConfigurationError
from core.jobs import reminders, run_due, sweep
from core.jobs.reminders import activation_due_days, days_left
from core.messaging.outbox import open_body
from core.messaging.outgoing import OutgoingMessage
from core.storage.db import unit_of_work
from core.storage.models import Credential, OutboxMessage, Student
from tests.factories import issue, link_chat, make_settings
from tests.support.lifecycle import activate, at, credential, outbox


def _rows(ctx: AppContext, kind: str) -> list[OutboxMessage]:
    return [r for r in outbox(ctx) if r.kind == kind]


def _validity_rows(ctx: AppContext) -> list[OutboxMessage]:
    """The "validity ends" reminders only. A credential ending within 14 days was issued in the
    previous semester (one issued in October lasts to 31 March), so the "a new semester has
    started, renew" nudge is due as well; it is not the subject of these tests."""
    return [r for r in _rows(ctx, "reminder") if ":validity-" in r.idempotency_key]


def _body(ctx: AppContext, row: OutboxMessage) -> OutgoingMessage:
    return open_body(ctx.box, row)


def _active(ctx: AppContext, issued: str = "2026-10-05T11:00:00+02:00", **student: object) -> tuple[int, int]:
    """Issued and activated; on 5 October (the default) it is valid until 31 March."""
    at(ctx, issued)
    student_id, cid = issue(ctx, **student)
    activate(ctx, cid)
    return student_id, cid


def _update(ctx: AppContext, model: type[Student] | type[Credential], row_id: int, **values: object) -> None:
    with unit_of_work(ctx.engine) as session:
        row = session.get(model, row_id)
        assert row is not None
        for name, value in values.items():
            setattr(row, name, value)
        session.add(row)


def _update_student(ctx: AppContext, student_id: int, **values: object) -> None:
    _update(ctx, Student, student_id, **values)


# --- 1. e-mail in the language the student chose in a chat --------------------------------

@pytest.mark.parametrize(("channel", "blocked"), [("telegram", True), ("console", False)])
def test_email_reminder_in_the_language_chosen_in_a_chat(ctx: AppContext, channel: str, blocked: bool) -> None:
    student_id, _ = _active(ctx)
    link_chat(ctx, student_id, language="en", channel=channel,
              blocked_at=ctx.clock.now() if blocked else None)
    at(ctx, "2027-03-17T10:00:00+01:00")  # 14 days before 31 March
    assert reminders(ctx)["validity"] == 1
    [row] = _validity_rows(ctx)
    assert (row.channel, row.language) == ("email", "en")  # no usable Telegram chat: e-mail
    message = _body(ctx, row)
    assert message.subject is not None
    assert message.subject.startswith("Mobile student ID (mLegitymacja): validity ends on")
    assert message.text.index("Hello") < message.text.index("Dzień dobry")


def test_email_language_is_that_of_the_newest_link(ctx: AppContext) -> None:
    student_id, _ = _active(ctx)
    link_chat(ctx, student_id, language="pl", channel="console", account_id="older")
    at(ctx, "2026-10-06T10:00:00+02:00")
    link_chat(ctx, student_id, language="en", channel="telegram", account_id="newer",
              blocked_at=datetime(2026, 10, 7, tzinfo=UTC))
    at(ctx, "2027-03-17T10:00:00+01:00")
    reminders(ctx)
    assert [r.language for r in _validity_rows(ctx)] == ["en"]
    assert {r.language for r in _rows(ctx, "reminder")} == {"en"}  # the nudge too


def test_chat_reminders_still_only_to_a_usable_telegram_chat(ctx: AppContext) -> None:
    student_id, _ = _active(ctx)
    link_chat(ctx, student_id, language="en", channel="console", account_id="console-1")
    link_chat(ctx, student_id, language="en", channel="telegram", account_id="77")
    at(ctx, "2027-03-17T10:00:00+01:00")
    reminders(ctx)
    assert [(r.channel, r.recipient) for r in _validity_rows(ctx)] == [("telegram", "77")]
    assert {(r.channel, r.recipient) for r in _rows(ctx, "reminder")} == {("telegram", "77")}  # the nudge too


def test_activation_expired_email_in_the_language_of_a_blocked_chat(ctx: AppContext) -> None:
    at(ctx, "2026-11-05T10:00:00+01:00")
    student_id, _ = issue(ctx)
    link_chat(ctx, student_id, language="en", blocked_at=ctx.clock.now())
    at(ctx, "2026-12-05T10:01:00+01:00")
    assert sweep(ctx)["activation_expired"] == 1
    rows = _rows(ctx, "activation_expired")
    assert [(r.channel, r.language) for r in rows] == [("email", "en")]  # blocked: no chat message
    assert _body(ctx, rows[0]).text.startswith("Hello")


def test_revocation_email_in_the_language_chosen_in_a_chat(ctx: AppContext) -> None:
    student_id, _ = _active(ctx)
    link_chat(ctx, student_id, language="en", channel="console")
    _update_student(ctx, student_id, status="graduated")
    assert sweep(ctx)["graduation_revoked"] == 1
    [row] = _rows(ctx, "revoked")
    assert row.language == "en" and _body(ctx, row).text.startswith("Hello")


# --- 2. under the ELS policy, renew only when renewal is possible ---------------------------

def test_els_card_ending_with_the_id_says_extend_the_card_and_apply(ctx: AppContext) -> None:
    ctx.settings.policy = "els"
    student_id, cid = _active(ctx, els_valid_until=date(2026, 10, 31))
    assert credential(ctx, cid).valid_until == date(2026, 10, 31)
    link_chat(ctx, student_id, language="en")
    at(ctx, "2026-10-17T10:00:00+02:00")
    assert reminders(ctx)["validity"] == 1
    [row] = _rows(ctx, "reminder")
    message = _body(ctx, row)
    assert "Extend your ELS card at the dean's office, then apply again" in message.text
    assert "Renew" not in message.text and "no new activation" not in message.text
    assert [[b.data for b in line] for line in message.buttons] == [["menu:request"]]


def test_els_card_ending_email_in_both_languages(ctx: AppContext) -> None:
    ctx.settings.policy = "els"
    _active(ctx, els_valid_until=date(2026, 10, 31))
    at(ctx, "2026-10-28T10:00:00+01:00")
    reminders(ctx)
    [row] = _rows(ctx, "reminder")
    text = _body(ctx, row).text
    assert "przedłuż ważność legitymacji ELS w dziekanacie" in text
    assert "extend your ELS card at the dean's office" in text
    assert "Przedłuż mLegitymację" not in text and "Renew mLegitymacja" not in text


def test_els_card_valid_longer_reminder_says_apply_for_a_new_one(ctx: AppContext) -> None:
    """Under the ELS policy a card valid longer does not make the credential renewable (docs/domain.md:
    extending needs a new application): the reminder says apply for a new one, never "Renew"."""
    ctx.settings.policy = "els"
    student_id, cid = _active(ctx, els_valid_until=date(2027, 9, 30))
    assert credential(ctx, cid).valid_until == date(2027, 3, 31)  # the semester ends before the card
    link_chat(ctx, student_id, language="en")
    at(ctx, "2027-03-17T10:00:00+01:00")
    reminders(ctx)
    [row] = _validity_rows(ctx)
    message = _body(ctx, row)
    assert "apply for a new one, valid until 30.09.2027" in message.text
    assert "Renew" not in message.text and "no new activation" not in message.text
    assert "must be activated again in mObywatel" in message.text
    assert [[b.data for b in line] for line in message.buttons] == [["menu:request"]]


def test_no_validity_reminder_when_not_eligible_to_renew(ctx: AppContext) -> None:
    student_id, cid = _active(ctx)
    # Removed on 20 March: still valid through 31 March (the removal deadline is 20 April), but may not renew.
    _update_student(ctx, student_id, status="removed", removed_on=date(2027, 3, 20))
    at(ctx, "2027-03-28T10:00:00+02:00")  # 3 days before 31 March
    assert run_due(ctx)["reminders"]["validity"] == 0
    assert _rows(ctx, "reminder") == []
    assert credential(ctx, cid).state == "active"


# --- 3. reminders only in the daytime; expiries at any hour ----------------------------------

def test_no_reminder_at_night_it_goes_that_morning(ctx: AppContext) -> None:
    _, cid = _active(ctx)
    _update(ctx, Credential, cid, valid_until=date(2027, 3, 31))
    # What `mleg jobs run-once --now 2027-03-28T01:30` did: the 3-day reminder at 01:30.
    at(ctx, "2027-03-28T01:30:00+01:00")
    result = reminders(ctx)
    assert result["validity"] == 0 and "outside the sending hours 09:00-20:00" in result["waiting"]
    assert _rows(ctx, "reminder") == []
    at(ctx, "2027-03-28T09:00:00+02:00")
    assert reminders(ctx)["validity"] == 1
    kinds = [r.idempotency_key.rsplit(":", 1)[1] for r in _rows(ctx, "reminder")]
    assert [k for k in kinds if k.startswith("validity")] == ["validity-3-2027-03-31"]


def test_hourly_runs_send_the_three_day_reminder_on_its_day_in_the_daytime(ctx: AppContext) -> None:
    _, cid = _active(ctx, "2026-09-15T11:00:00+02:00")  # the summer semester
    assert credential(ctx, cid).valid_until == date(2026, 10, 31)
    queued_at = []
    for hour in range(24):  # 28 October 2026 (CET), the day "3 days before" 31 October
        at(ctx, f"2026-10-28T{hour:02d}:00:00+01:00")
        if reminders(ctx)["validity"]:
            queued_at.append(ctx.clock.now().astimezone(WARSAW).hour)
    assert queued_at == [9]


def test_early_morning_activation_deadline_reminded_the_day_before(ctx: AppContext) -> None:
    ctx.settings.reminders.activation_days_before = [1, 0]
    at(ctx, "2026-11-05T10:00:00+01:00")
    _, cid = issue(ctx)
    # 05:00, before the sending hours.
    _update(ctx, Credential, cid, activation_deadline=datetime(2026, 12, 5, 5, 0, tzinfo=WARSAW))
    at(ctx, "2026-12-04T10:00:00+01:00")
    reminders(ctx)
    # "0 days before" has no daytime before 05:00 on the 5th: it goes on the 4th, the last chance.
    assert [r.idempotency_key.rsplit(":", 1)[1] for r in _rows(ctx, "reminder")] == ["activation-0"]
    at(ctx, "2026-12-05T05:01:00+01:00")
    assert sweep(ctx)["activation_expired"] == 1  # expiries do not wait for the daytime


def test_activation_due_days_moves_a_day_without_sending_hours_back() -> None:
    deadline = datetime(2026, 12, 5, 0, 30, tzinfo=WARSAW)
    assert activation_due_days([7, 1], deadline, date(2026, 11, 27), 9) is None
    assert activation_due_days([7, 1], deadline, date(2026, 12, 3), 9) == 7
    assert activation_due_days([7, 1], deadline, date(2026, 12, 4), 9) == 1  # the calendar day before
    assert activation_due_days([1, 0], deadline, date(2026, 12, 4), 9) == 0
    late = datetime(2026, 12, 5, 15, 0, tzinfo=WARSAW)
    assert activation_due_days([1, 0], late, date(2026, 12, 4), 9) == 1


def test_expiry_at_night_but_no_reminder(ctx: AppContext) -> None:
    _, cid = _active(ctx)
    at(ctx, "2027-04-01T00:30:00+02:00")  # valid through 31 March
    results = run_due(ctx)
    assert results["sweep"]["validity_expired"] == 1
    assert "waiting" in results["reminders"]
    assert credential(ctx, cid).state == "expired"


def test_sending_hours_are_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (make_settings(tmp_path).reminders.send_from_hour, make_settings(tmp_path).reminders.send_until_hour) \
        == (9, 20)
    monkeypatch.setenv("MLEG_REMINDERS__SEND_FROM_HOUR", "8")
    monkeypatch.setenv("MLEG_REMINDERS__SEND_UNTIL_HOUR", "21")
    loaded = make_settings(tmp_path).reminders
    assert (loaded.send_from_hour, loaded.send_until_hour) == (8, 21)
    monkeypatch.setenv("MLEG_REMINDERS__SEND_FROM_HOUR", "21")
    with pytest.raises(ConfigurationError, match="send_from_hour"):
        make_settings(tmp_path)


# --- 4. days left count today ---------------------------------------------------------------

def test_days_left_count_today() -> None:
    assert days_left(date(2027, 1, 15), date(2027, 1, 12)) == 4
    assert days_left(date(2027, 1, 15), date(2027, 1, 15)) == 1


def test_reminder_text_days_left_agrees_with_the_last_valid_day(ctx: AppContext) -> None:
    _, cid = _active(ctx)
    _update(ctx, Credential, cid, valid_until=date(2027, 1, 15))
    at(ctx, "2027-01-12T10:00:00+01:00")
    reminders(ctx)
    [sent] = _rows(ctx, "reminder")
    text = _body(ctx, sent).text
    assert "ważna do 15.01.2027 włącznie (zostały 4 dni łącznie z dzisiejszym)" in text
    assert "valid until 15.01.2027 inclusive (4 days left, including today)" in text


# --- 5. removed or graduated: the dean's office, not "apply again" ----------------------------

def test_graduation_revocation_points_to_the_deans_office(ctx: AppContext) -> None:
    student_id, _ = _active(ctx)
    _update_student(ctx, student_id, status="graduated")
    sweep(ctx)
    [row] = _rows(ctx, "revoked")
    text = _body(ctx, row).text
    assert "skontaktuj się z dziekanatem" in text and "contact the dean's office" in text
    assert "złóż nowy wniosek" not in text and "apply again in the chat" not in text


def test_no_activation_reminder_to_a_student_removed_meanwhile(ctx: AppContext) -> None:
    """Removed from the list, the credential ends a month after the removal, before its data
    would: "activate by <the data's deadline>" would be untrue, and urging it pointless."""
    at(ctx, "2026-11-05T10:00:00+01:00")
    student_id, _ = issue(ctx)  # activation data until 5 December
    at(ctx, "2026-11-28T10:00:00+01:00")
    reminders(ctx)
    assert [r.idempotency_key.rsplit(":", 1)[1] for r in _rows(ctx, "reminder")] == ["activation-7"]
    _update_student(ctx, student_id, status="removed", removed_on=date(2026, 10, 30))  # ends 30 November
    at(ctx, "2026-12-04T10:00:00+01:00")  # the 1-day reminder's day
    reminders(ctx)
    assert [r.idempotency_key.rsplit(":", 1)[1] for r in _rows(ctx, "reminder")] == ["activation-7"]
