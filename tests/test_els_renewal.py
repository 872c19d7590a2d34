"""Under the ELS policy a credential is never renewed: a new application replaces it (docs/domain.md).

"ELS-based: the credential is issued only against a valid plastic ELS card, and is valid for
one semester, up to the ELS validity date. Extending it needs a new application." So with a
card valid longer there is no renewal: in the last `renewal_window_days` of the credential the
student applies again, and the new credential (new activation data, activated again in
mObywatel) replaces the current one, revoked as "replaced" in the same transaction. The
stand-alone policy keeps its renewal. Both databases.

The default timeline: issued and activated on 5 October 2026 with a card valid until
30 September 2027, the credential is valid until 31 March 2027; the window opens on 1 March;
a new application on 10 March gives a credential valid until 30 September 2027 (the card).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.app.errors import ConflictError
from core.credentials import renewal as renewal_service
from core.credentials import service
from core.credentials.lifecycle import EndReason
from core.jobs import reminders
from core.messaging.outbox import open_body
from core.storage.db import make_engine, unit_of_work
from core.storage.models import (
    Application,
    AuditEvent,
    Credential,
    CredentialEvent,
    OutboxMessage,
    Student,
)
from core.students.eligibility import SHORT_VALIDITY_DAYS
from core.students.semester import end_of_day
from tests.chat_driver import ChatDriver
from tests.factories import add_student, build_ctx, link_chat, make_settings
from tests.support.chat import all_credentials, apply_in_chat, bound_chat
from tests.support.lifecycle import activate, at, credential, outbox

CARD_LATER = date(2027, 9, 30)
IN_WINDOW = "2027-03-10T10:00:00+01:00"
BEFORE_WINDOW = "2027-02-20T10:00:00+01:00"


@pytest.fixture
def els(tmp_path: Path, db_url: str, clock: FixedClock) -> Iterator[AppContext]:
    engine = make_engine(db_url)
    yield build_ctx(make_settings(tmp_path, database_url=db_url, policy="els"), engine, clock)
    engine.dispose()


def _student(ctx: AppContext, **kw: object) -> tuple[Student, str]:
    with unit_of_work(ctx.engine) as session:
        return add_student(session, ctx.box, **kw)


# What a student types in the chat to be identified: the PESEL and the ELS (or album) number.
_IDENTITY: dict[int, tuple[str, str]] = {}


def _active(ctx: AppContext, els_valid_until: date = CARD_LATER) -> tuple[int, int]:
    """A student whose credential was issued and activated on 5 October 2026."""
    at(ctx, "2026-10-05T11:00:00+02:00")
    with unit_of_work(ctx.engine) as session:
        student, pesel = add_student(session, ctx.box, els_valid_until=els_valid_until)
        issued = service.request_credential(ctx, session, student, channel="console", actor="student")
        student_id, credential_id = student.id or 0, issued.id or 0
        _IDENTITY[student_id] = (pesel, (student.els_number if ctx.settings.policy == "els" else student.album) or "")
    activate(ctx, credential_id)
    return student_id, credential_id


def _replace(ctx: AppContext, student_id: int) -> Credential:
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        current = service.live_credential(session, student_id)
        assert student is not None and current is not None
        return renewal_service.replace_credential(ctx, session, student, current, channel="console", actor="student")


def _checks(ctx: AppContext, student_id: int, credential_id: int) -> tuple[renewal_service.RenewalCheck,
                                                                             renewal_service.ReplacementCheck]:
    with Session(ctx.engine) as session:
        student, current = session.get(Student, student_id), session.get(Credential, credential_id)
        assert student is not None and current is not None
        return (renewal_service.renewal_check(ctx, student, current),
                renewal_service.replacement_check(ctx, student, current))


def _credentials(ctx: AppContext, student_id: int) -> list[Credential]:
    with Session(ctx.engine) as session:
        return list(session.exec(
            select(Credential).where(Credential.student_id == student_id).order_by(col(Credential.id))).all())


def _text(ctx: AppContext, row: OutboxMessage) -> str:
    return open_body(ctx.box, row).text


# --- the services ---------------------------------------------------------------------------

def test_no_renewal_with_a_card_valid_longer(els: AppContext) -> None:
    student_id, cid = _active(els)
    at(els, IN_WINDOW)
    renewal, replacement = _checks(els, student_id, cid)
    assert (renewal.possible, renewal.reason, renewal.new_valid_until) == (False, "els_apply_again", None)
    assert (replacement.possible, replacement.new_valid_until) == (True, CARD_LATER)
    with unit_of_work(els.engine) as session:
        student, current = session.get(Student, student_id), session.get(Credential, cid)
        assert student is not None and current is not None
        with pytest.raises(ConflictError, match="els_apply_again"):
            renewal_service.renew(els, session, student, current, channel="console", actor="student")
    assert credential(els, cid).valid_until == date(2027, 3, 31)  # nothing moved
    assert [r.kind for r in outbox(els) if r.kind == "renewed"] == []


def test_new_application_in_the_window_replaces_the_credential(els: AppContext) -> None:
    student_id, old_id = _active(els)
    at(els, IN_WINDOW)
    before = outbox(els)[-1].id or 0
    new = _replace(els, student_id)

    old, fresh = _credentials(els, student_id)
    assert (old.id, fresh.id) == (old_id, new.id)
    assert (old.state, old.end_reason) == ("revoked", EndReason.REPLACED)
    assert old.ended_at == els.clock.now() and old.code_hash is None
    assert (fresh.state, fresh.valid_until, fresh.policy) == ("pending_activation", CARD_LATER, "els")
    assert fresh.issued_at == els.clock.now()

    # New activation data, only to the register address; a notice of the replacement there too.
    email = _load_student(els, student_id).email
    rows = outbox(els, before)
    assert [(r.kind, r.channel, r.recipient, r.credential_id) for r in rows] == [
        ("activation", "email", email, fresh.id), ("replaced", "email", email, old_id)]
    assert "30.09.2027" in _text(els, rows[0])
    notice = _text(els, rows[1])
    assert "(ważna do 31.03.2027) została unieważniona" in notice and "ważnej do 30.09.2027" in notice
    assert "If you did not apply" in notice  # the other language follows

    with Session(els.engine) as session:
        events = session.exec(select(CredentialEvent).where(CredentialEvent.credential_id == old_id)
                              .order_by(col(CredentialEvent.id))).all()
        assert (events[-1].from_state, events[-1].to_state, events[-1].reason, events[-1].actor) == (
            "active", "revoked", "replaced", "student")
        [application] = session.exec(select(Application).where(Application.credential_id == fresh.id)).all()
        assert (application.kind, application.channel) == ("replacement", "console")
        [audit] = session.exec(select(AuditEvent).where(AuditEvent.action == "application.replacement")).all()
        assert (audit.student_id, audit.credential_id) == (student_id, fresh.id)
        assert json.loads(audit.detail) == {
            "channel": "console", "replaced_credential_id": old_id,
            "old_valid_until": "2027-03-31", "new_valid_until": "2027-09-30"}
        revoked = session.exec(select(AuditEvent).where(AuditEvent.action == "credential.revoked")).one()
        assert (revoked.credential_id, json.loads(revoked.detail)["reason"]) == (old_id, "replaced")

    # The new one is activated as a first one is; it ends with the card, so the next one needs the card extended.
    activate(els, fresh.id or 0)
    assert credential(els, fresh.id or 0).state == "active"
    assert _checks(els, student_id, fresh.id or 0)[1].reason == "els_not_extended"


def _load_student(ctx: AppContext, student_id: int) -> Student:
    with Session(ctx.engine) as session:
        student = session.get(Student, student_id)
        assert student is not None
        return student


def test_new_application_before_the_window_is_refused(els: AppContext) -> None:
    student_id, cid = _active(els)
    at(els, BEFORE_WINDOW)
    replacement = _checks(els, student_id, cid)[1]
    assert (replacement.possible, replacement.reason, replacement.opens_on) == (False, "too_early", date(2027, 3, 1))
    before = len(outbox(els))
    with pytest.raises(ConflictError, match="too_early"):
        _replace(els, student_id)
    assert [c.state for c in _credentials(els, student_id)] == ["active"]
    assert len(outbox(els)) == before


def test_card_not_extended_is_refused(els: AppContext) -> None:
    student_id, cid = _active(els, els_valid_until=date(2027, 3, 31))  # ends with the credential
    at(els, IN_WINDOW)
    renewal, replacement = _checks(els, student_id, cid)
    assert renewal.reason == "els_apply_again"
    assert (replacement.possible, replacement.reason) == (False, "els_not_extended")
    with pytest.raises(ConflictError, match="els_not_extended"):
        _replace(els, student_id)
    assert [c.state for c in _credentials(els, student_id)] == ["active"]


def test_standalone_renewal_unchanged(ctx: AppContext) -> None:
    student_id, cid = _active(ctx)
    at(ctx, IN_WINDOW)
    renewal, replacement = _checks(ctx, student_id, cid)
    assert (renewal.possible, renewal.new_valid_until) == (True, date(2027, 10, 31))
    assert (replacement.possible, replacement.reason) == (False, "not_els")
    with pytest.raises(ConflictError, match="not_els"):
        _replace(ctx, student_id)
    with unit_of_work(ctx.engine) as session:
        student, current = session.get(Student, student_id), session.get(Credential, cid)
        assert student is not None and current is not None
        renewal_service.renew(ctx, session, student, current, channel="console", actor="student")
    [renewed] = _credentials(ctx, student_id)
    assert (renewed.id, renewed.state, renewed.valid_until) == (cid, "active", date(2027, 10, 31))
    assert [r.kind for r in outbox(ctx) if r.kind in ("renewed", "replaced")] == ["renewed"]


def test_two_replacements_at_once_make_one_credential(els: AppContext) -> None:
    """Two chats of one student confirming together: the second waits for the first (PostgreSQL
    row lock; SQLite has one writer), then finds nothing active to replace."""
    if els.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: nothing runs at the same time")
    student_id, _ = _active(els)
    at(els, IN_WINDOW)
    first = Session(els.engine)
    student = first.get(Student, student_id)
    current = service.live_credential(first, student_id)
    assert student is not None and current is not None
    renewal_service.replace_credential(els, first, student, current, channel="telegram", actor="student")
    first.flush()
    outcome: list[str] = []

    def second() -> None:
        try:
            _replace(els, student_id)
            outcome.append("replaced")
        except ConflictError as refused:
            outcome.append(str(refused))

    thread = threading.Thread(target=second)
    thread.start()
    # The second replacement either finishes (no lock stopped it: wrong) or is seen by the
    # server waiting on a lock; only a stuck test reaches the deadline.
    deadline = time.monotonic() + 30
    while thread.is_alive() and not _waiting_on_a_lock(els):
        assert time.monotonic() < deadline, "the second replacement neither finished nor waited on a lock"
        time.sleep(0.01)
    assert thread.is_alive() and outcome == [], f"not held by the first one's row lock: {outcome}"
    first.commit()
    first.close()
    thread.join(timeout=10)
    assert outcome == ["new application not possible: not_active"]
    assert [c.state for c in _credentials(els, student_id)] == ["revoked", "pending_activation"]


def _waiting_on_a_lock(ctx: AppContext) -> bool:
    with ctx.engine.connect() as connection:
        return bool(connection.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar())


# --- the chat ---------------------------------------------------------------------------------

def _bound_chat(ctx: AppContext, student_id: int, language: str = "en") -> ChatDriver:
    chat = ChatDriver(ctx)
    chat.identify(*_IDENTITY[student_id], language)
    return chat


def test_chat_renew_explains_and_offers_the_new_application(els: AppContext) -> None:
    student_id, old_id = _active(els)
    at(els, IN_WINDOW)
    chat = _bound_chat(els, student_id)
    assert "active and valid until 31.03.2027" in chat.text
    assert "you can already apply for a new mobile student ID, valid until 30.09.2027" in chat.text
    assert "menu:request" in chat.buttons and "menu:renew" not in chat.buttons

    chat.say("/renew")
    assert "At our university the mobile student ID isn't renewed" in chat.text
    assert "extended at the dean's office (hologram)" in chat.text
    assert "so you can apply now: the new mobile student ID will be valid until 30.09.2027" in chat.text
    assert "confirm:yes:renew" not in chat.buttons

    chat.press("menu:request")  # the same confirmation as a first application, saying what it replaces
    assert "REPLACES your current one (valid until 31.03.2027) at once" in chat.text
    assert "the current one stops working" in chat.text
    assert "goes ONLY to a***@" in chat.text and "Activate it within 30 days" in chat.text
    assert "confirm:yes:replace" in chat.buttons and "confirm:yes:request" not in chat.buttons
    assert [c.state for c in _credentials(els, student_id)] == ["active"]  # nothing before the yes

    chat.press("confirm:yes:replace")
    assert "Your previous mobile student ID has been revoked" in chat.text
    assert "it will be valid until 30.09.2027" in chat.text
    old, fresh = _credentials(els, student_id)
    assert (old.id, old.state, old.end_reason) == (old_id, "revoked", "replaced")
    assert (fresh.state, fresh.valid_until) == ("pending_activation", CARD_LATER)
    [activation] = [r for r in chat.outbox("activation") if r.credential_id == fresh.id]
    assert activation.recipient == _load_student(els, student_id).email
    with Session(els.engine) as session:
        [application] = session.exec(select(Application).where(Application.credential_id == fresh.id)).all()
        assert (application.kind, application.channel) == ("replacement", "console")

    chat.say("/status")
    assert "valid until 30.09.2027" in chat.text and "menu:request" not in chat.buttons


def test_chat_renew_before_the_window_says_when(els: AppContext) -> None:
    student_id, _ = _active(els)
    at(els, BEFORE_WINDOW)
    chat = _bound_chat(els, student_id)
    assert "menu:request" not in chat.buttons and "menu:renew" not in chat.buttons
    chat.say("/renew")
    assert "isn't renewed" in chat.text
    assert "You can apply for a new one from 01.03.2027" in chat.text
    assert chat.buttons == ["menu:status"]
    chat.say("/request")
    assert "You already have an active mobile student ID" in chat.text
    assert "from 01.03.2027" in chat.text
    assert not any(b.startswith("confirm:yes") for b in chat.buttons)
    chat.press_anyway("confirm:yes:replace")  # a stale button: no replacement
    assert [c.state for c in _credentials(els, student_id)] == ["active"]


def test_chat_card_not_extended_says_extend_it_first(els: AppContext) -> None:
    student_id, _ = _active(els, els_valid_until=date(2027, 3, 31))
    at(els, IN_WINDOW)
    chat = _bound_chat(els, student_id, "pl")
    assert "menu:request" not in chat.buttons and "menu:renew" not in chat.buttons
    chat.say("/renew")
    assert "Na naszej uczelni mLegitymacji się nie przedłuża" in chat.text
    assert "Twoja legitymacja ELS jest ważna tylko do 31.03.2027" in chat.text
    assert "Najpierw przedłuż legitymację ELS w dziekanacie" in chat.text
    assert chat.buttons == ["menu:status"]
    chat.say("/request")
    assert "ważna tylko do 31.03.2027" in chat.text
    assert [c.state for c in _credentials(els, student_id)] == ["active"]


def test_chat_stale_renew_confirmation_under_els_renews_nothing(els: AppContext) -> None:
    """A "confirm renewal" from before the university chose the ELS policy: explained, not renewed."""
    student_id, cid = _active(els)
    at(els, IN_WINDOW)
    chat = _bound_chat(els, student_id)
    from core.conversation.state import ConversationState
    from core.storage.models import Conversation

    with unit_of_work(els.engine) as session:  # the chat was left at the renewal's question
        row = session.exec(select(Conversation).where(Conversation.account_id == chat.account)).one()
        state = ConversationState.from_json(row.state)
        state.step = "confirm_renew"
        row.state = state.to_json()
        session.add(row)
    chat.press_anyway("confirm:yes:renew")
    assert "isn't renewed" in chat.text and "menu:request" in chat.buttons
    assert credential(els, cid).valid_until == date(2027, 3, 31)
    assert [c.state for c in _credentials(els, student_id)] == ["active"]


def test_chat_standalone_renewal_unchanged(ctx: AppContext) -> None:
    student, pesel = _student(ctx)
    chat = ChatDriver(ctx)
    chat.identify(pesel, student.album, "en")
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    [issued] = _credentials(ctx, student.id or 0)
    activate(ctx, issued.id or 0)
    at(ctx, IN_WINDOW)
    chat.say("/status")
    assert "menu:renew" in chat.buttons and "menu:request" not in chat.buttons
    chat.press("menu:renew")
    assert "isn't renewed" not in chat.text
    chat.press("confirm:yes:renew")
    [renewed] = _credentials(ctx, student.id or 0)
    assert (renewed.id, renewed.state, renewed.valid_until) == (issued.id, "active", date(2027, 10, 31))


# --- the reminders ------------------------------------------------------------------------------

def _reminder_rows(ctx: AppContext, family: str) -> list[OutboxMessage]:
    return [r for r in outbox(ctx) if r.kind == "reminder" and f":{family}-" in r.idempotency_key]


def test_semester_start_reminder_says_apply_not_renew(els: AppContext) -> None:
    student_id, _ = _active(els)
    link_chat(els, student_id, language="en")
    at(els, "2027-03-02T10:00:00+01:00")  # the summer semester began on 1 March; the window is open
    assert reminders(els)["semester_start"] == 1
    [row] = _reminder_rows(els, "semester-start")
    message = open_body(els.box, row)
    assert "at our university it is not renewed" in message.text
    assert "Once your ELS card is extended at the dean's office (hologram), apply for a new one" in message.text
    assert "Renew" not in message.text and "renew it" not in message.text
    assert [[b.data for b in line] for line in message.buttons] == [["menu:request"]]


def test_semester_start_reminder_with_the_card_not_extended_by_email(els: AppContext) -> None:
    _active(els, els_valid_until=date(2027, 3, 31))
    at(els, "2027-03-02T10:00:00+01:00")
    assert reminders(els)["semester_start"] == 1
    [row] = _reminder_rows(els, "semester-start")
    text = _text(els, row)
    assert "gdy przedłużysz ważność legitymacji ELS w dziekanacie (hologram), złóż nowy wniosek" in text
    assert "once your ELS card is extended at the dean's office (hologram), apply for a new mobile student ID" in text
    assert "Przedłuż mLegitymację" not in text and "you can now renew" not in text


def test_validity_reminder_by_email_with_a_card_valid_longer(els: AppContext) -> None:
    _active(els)
    at(els, "2027-03-28T10:00:00+02:00")  # 3 days before 31 March
    reminders(els)
    [row] = _reminder_rows(els, "validity")
    text = _text(els, row)
    assert "złóż nowy wniosek w czacie z botem uczelni" in text and "ważna do 30.09.2027" in text
    assert "apply for a new mobile student ID in the chat" in text
    assert "nie wymaga nowej aktywacji" not in text and "needs no new activation" not in text


def test_standalone_reminders_still_say_renew(ctx: AppContext) -> None:
    student_id, _ = _active(ctx)
    link_chat(ctx, student_id, language="en")
    at(ctx, "2027-03-17T10:00:00+01:00")
    reminders(ctx)
    for family in ("validity", "semester-start"):
        [row] = _reminder_rows(ctx, family)
        assert [[b.data for b in line] for line in open_body(ctx.box, row).buttons] == [["menu:renew"]]


# --- ELS policy: the activation window and a card that ends soon ---------------------------

def test_els_activation_deadline_never_outlasts_the_credential(els_ctx: AppContext) -> None:
    chat, _ = bound_chat(els_ctx, "en", els_number="ELS-00001234", els_valid_until=date(2026, 10, 20))
    apply_in_chat(chat)
    assert "by 20.10.2026 23:59; it will be valid until 20.10.2026" in chat.text
    [credential] = all_credentials(els_ctx)
    assert credential.activation_deadline == end_of_day(date(2026, 10, 20))
    assert "20.10.2026 23:59" in open_body(els_ctx.box, chat.outbox("activation")[0]).text


def test_els_card_ending_soon_is_announced_before_applying(els_ctx: AppContext) -> None:
    until = els_ctx.clock.today() + timedelta(days=SHORT_VALIDITY_DAYS - 2)
    chat, _ = bound_chat(els_ctx, "pl", els_number="ELS-00004321", els_valid_until=until)
    chat.press("menu:request")
    assert f"ELS jest ważna tylko do {until:%d.%m.%Y}" in chat.text
    assert "(jeszcze 6 dni, łącznie z dzisiejszym)" in chat.text
    chat.press("confirm:yes:request")  # they may still apply
    assert "Wniosek przyjęty" in chat.text
    [credential] = all_credentials(els_ctx)
    assert credential.valid_until == until and credential.activation_deadline == end_of_day(until)


def test_els_card_valid_long_enough_brings_no_warning(els_ctx: AppContext) -> None:
    until = els_ctx.clock.today() + timedelta(days=SHORT_VALIDITY_DAYS)
    chat, _ = bound_chat(els_ctx, "en", els_number="ELS-00005555", els_valid_until=until)
    chat.press("menu:request")
    assert "ELS card is valid only" not in chat.text
