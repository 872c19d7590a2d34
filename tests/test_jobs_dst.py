""""Days before" count Warsaw calendar days, across the DST changes (last Sunday of March and October)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from core.app.context import AppContext
from core.jobs import reminders, sweep
from core.jobs.reminders import due_days
from core.storage.db import unit_of_work
from core.storage.models import Credential
from tests.factories import issue
from tests.support.lifecycle import activate, at, outbox


def _kinds(ctx: AppContext) -> list[str]:
    return [r.idempotency_key.split(":", 2)[2] for r in outbox(ctx) if r.kind == "reminder"]


def _validity_kinds(ctx: AppContext) -> list[str]:
    """Issued in the winter semester, the credential also gets the 2 March "renew for the summer
    semester" nudge; only the validity reminders are the subject here."""
    return [kind for kind in _kinds(ctx) if kind.startswith("validity-")]


def test_validity_reminder_on_the_spring_forward_sunday(ctx: AppContext) -> None:
    at(ctx, "2027-02-20T10:00:00+01:00")  # the winter semester: valid until 31 March
    _, cid = issue(ctx)
    activate(ctx, cid)
    # 3 days before 31 March 2027 is Sunday 28 March, the night clocks go 02:00 -> 03:00.
    at(ctx, "2027-03-27T18:59:00+00:00")  # 19:59 CET on Saturday 27th, the last sending hour
    reminders(ctx)
    assert _validity_kinds(ctx) == ["validity-14-2027-03-31"]
    at(ctx, "2027-03-27T23:00:00+00:00")  # 00:00 CET on Sunday 28th: due, but night
    reminders(ctx)
    at(ctx, "2027-03-28T06:59:00+00:00")  # 08:59 CEST (07:59 had it still been CET)
    reminders(ctx)
    assert _validity_kinds(ctx) == ["validity-14-2027-03-31"]
    at(ctx, "2027-03-28T07:00:00+00:00")  # 09:00 CEST: the sending hours follow Warsaw time
    reminders(ctx)
    assert _validity_kinds(ctx) == ["validity-14-2027-03-31", "validity-3-2027-03-31"]
    # Valid through 31 March in Warsaw: 23:30 CEST is 21:30 UTC, still valid; 22:00 UTC is 1 April.
    at(ctx, "2027-03-31T21:59:00+00:00")
    assert sweep(ctx)["validity_expired"] == 0
    at(ctx, "2027-03-31T22:00:00+00:00")
    assert sweep(ctx)["validity_expired"] == 1


def test_activation_reminder_across_the_autumn_change(ctx: AppContext) -> None:
    at(ctx, "2026-10-10T10:00:00+02:00")
    _, cid = issue(ctx)
    # Deadline Wednesday 28 October 00:30 CET; 7 days before is 21 October (CEST), across 25 October.
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, cid)
        assert credential is not None
        credential.activation_deadline = datetime(2026, 10, 27, 23, 30, tzinfo=UTC)
        session.add(credential)
    at(ctx, "2026-10-20T17:59:00+00:00")  # 19:59 CEST on the 20th
    reminders(ctx)
    assert _kinds(ctx) == []
    at(ctx, "2026-10-21T06:59:00+00:00")  # 08:59 CEST on the 21st: the day, not yet the hours
    reminders(ctx)
    assert _kinds(ctx) == []
    at(ctx, "2026-10-21T07:00:00+00:00")  # 09:00 CEST on the 21st
    reminders(ctx)
    assert _kinds(ctx) == ["activation-7"]


def test_due_days_picks_the_most_urgent_reached() -> None:
    end = date(2027, 3, 31)
    assert due_days([14, 3], end, date(2027, 3, 16)) is None
    assert due_days([14, 3], end, date(2027, 3, 17)) == 14
    assert due_days([14, 3], end, date(2027, 3, 29)) == 3
