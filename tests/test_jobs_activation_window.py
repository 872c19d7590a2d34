"""The 30-day activation window: reminders 7 and 1 day before, then the data dies and the student is told."""

from __future__ import annotations

import pytest

from core.app.context import AppContext
from core.app.errors import ActivationError
from core.jobs import reminders, run_due, sweep
from core.messaging.outbox import open_body
from tests.factories import issue, link_chat
from tests.support.lifecycle import activate, at, credential, mailed_activation_code, outbox


def _reminder_keys(ctx: AppContext) -> list[str]:
    return [r.idempotency_key.rsplit(":", 1)[1] for r in outbox(ctx) if r.kind == "reminder"]


def test_reminders_at_seven_and_one_day_then_expiry_with_notices(ctx: AppContext) -> None:
    at(ctx, "2026-11-05T10:00:00+01:00")  # deadline 5 December 10:00 CET
    student_id, cid = issue(ctx)
    pid = credential(ctx, cid).public_id
    code = mailed_activation_code(ctx, cid)
    link_chat(ctx, student_id, language="pl")
    for moment in ("2026-11-27T23:59:00+01:00", "2026-11-28T00:00:00+01:00", "2026-11-29T12:00:00+01:00",
                   "2026-12-04T00:00:00+01:00", "2026-12-05T09:59:00+01:00"):
        at(ctx, moment)
        reminders(ctx)
        reminders(ctx)
    assert _reminder_keys(ctx) == ["activation-7", "activation-1"]
    assert credential(ctx, cid).state == "pending_activation"

    at(ctx, "2026-12-05T10:01:00+01:00")
    assert sweep(ctx)["activation_expired"] == 1
    assert sweep(ctx)["activation_expired"] == 0
    ended = credential(ctx, cid)
    assert (ended.state, ended.end_reason, ended.code_hash) == ("expired", "activation_window_passed", None)
    notices = [(r.idempotency_key, r.channel) for r in outbox(ctx) if r.kind == "activation_expired"]
    assert notices == [(f"activation-expired:{pid}", "email"), (f"activation-expired:{pid}:telegram", "telegram")]
    email = open_body(ctx.box, outbox(ctx)[-2])
    assert "złóż wniosek ponownie" in email.text and "apply again" in email.text
    assert [[b.data for b in line] for line in open_body(ctx.box, outbox(ctx)[-1]).buttons] == [["menu:request"]]
    with pytest.raises(ActivationError):
        activate(ctx, cid, code)
    # The mail server was away the whole month: the activation mail and the reminders still
    # queued are taken back (their data is dead), kept on record, never sent.
    taken_back = [(r.kind, r.status, r.body) for r in outbox(ctx) if r.kind in ("activation", "reminder")]
    assert taken_back == [("activation", "cancelled", None)] + [("reminder", "cancelled", None)] * 2
    assert all(r.last_error == "cancelled: the credential was expired (activation_window_passed) first"
               for r in outbox(ctx) if r.status == "cancelled")


def test_after_downtime_only_the_most_urgent_reminder_is_sent(ctx: AppContext) -> None:
    at(ctx, "2026-11-05T10:00:00+01:00")
    issue(ctx)
    at(ctx, "2026-12-04T09:00:00+01:00")  # down since before the 7-day mark; the first daytime run
    run_due(ctx)
    run_due(ctx)
    assert _reminder_keys(ctx) == ["activation-1"]
    rows = [r for r in outbox(ctx) if r.kind == "reminder"]
    assert rows[0].channel == "email" and rows[0].recipient.endswith("@student.example.edu.pl")
    assert "05.12.2026 10:00" in open_body(ctx.box, rows[0]).text


def test_no_activation_reminder_once_activated(ctx: AppContext) -> None:
    at(ctx, "2026-11-05T10:00:00+01:00")
    _, cid = issue(ctx)
    activate(ctx, cid)
    at(ctx, "2026-12-04T08:00:00+01:00")
    reminders(ctx)
    assert _reminder_keys(ctx) == []
