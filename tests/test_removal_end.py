"""A removal from the student list brings the credential's end forward: the e-mail status answer,
`mleg credentials` and the chat give that end, and never ask to activate after it."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.app.catalog import LANGUAGES
from core.app.clock import FixedClock
from core.app.context import AppContext
from core.credentials import service
from core.messaging.outbox import open_body
from core.storage.db import make_engine, unit_of_work
from core.storage.models import (
    Credential,
    Student,
)
from core.students.semester import end_of_day, removal_deadline
from core.support.mailbox_rules import _status_text
from tests.chat_driver import ChatDriver
from tests.cli_helpers import cli_environment, run
from tests.factories import activation_code, build_ctx, make_settings
from tests.support.chat import apply_in_chat, bound_chat
from tests.support.lifecycle import enrolled, request_for, update_student

REMOVED_ON = date(2026, 9, 20)  # a month later, 20 October 2026, the credential ends


def _fmt(day: date) -> str:
    return day.strftime("%d.%m.%Y")


def _mail_status(ctx: AppContext, student_id: int, lang: str) -> str:
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        assert student is not None
        return _status_text(ctx, session, student, lang)


def _removed_with_pending_data(ctx: AppContext) -> tuple[int, int, str, str]:
    """A student who applied on 5 October 2026 (valid until 31 March 2027, activation by 4 November)
    and was removed from the list on 20 September, noticed by the register a day later."""
    student_id, pesel, album = enrolled(ctx)
    credential_id = request_for(ctx, student_id)
    update_student(ctx, student_id, status="removed", removed_on=REMOVED_ON)
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    clock.advance(timedelta(days=1))
    return student_id, credential_id, pesel, album


# --- the e-mail status answer and the CLI -----------------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
def test_status_mail_of_removed_student_with_pending_data_gives_the_removal_end(
        sqlite_ctx: AppContext, lang: str) -> None:
    student_id, _, _, _ = _removed_with_pending_data(sqlite_ctx)
    ends = removal_deadline(REMOVED_ON)
    text = _mail_status(sqlite_ctx, student_id, lang)
    assert _fmt(ends) in text
    assert "31.03.2027" not in text  # the credential's own end, a removal brings forward
    assert "04.11.2026" not in text  # activation by a day the credential no longer lives
    assert "removed" in text or "skreślon" in text


@pytest.mark.parametrize("status", ["removed", "graduated", "doctoral"])
def test_status_mail_without_a_credential_tells_why_one_cannot_be_had(sqlite_ctx: AppContext, status: str) -> None:
    overrides: dict[str, object] = ({"study_level": "doctoral"} if status == "doctoral"
                                    else {"status": status, "removed_on": REMOVED_ON if status == "removed" else None})
    student_id, _, _ = enrolled(sqlite_ctx, **overrides)
    for lang, intro in (("en", "A mobile student ID can't be issued to you because"),
                        ("pl", "mLegitymacja nie może zostać wydana, ponieważ")):
        text = _mail_status(sqlite_ctx, student_id, lang)
        assert intro in text, text
        assert "apply again" not in text and "złożyć wniosek" not in text


@pytest.mark.process
def test_cli_credentials_show_the_end_a_removal_brings_forward(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, database_url=sqlite_url)
    engine = make_engine(sqlite_url)
    ctx = build_ctx(settings, engine, FixedClock(datetime(2026, 10, 5, 9, tzinfo=UTC)))
    _, _, _, removed_album = _removed_with_pending_data(ctx)
    kept_id, _, _ = enrolled(ctx)
    request_for(ctx, kept_id)
    engine.dispose()
    env = cli_environment(tmp_path, sqlite_url, COLUMNS="250")

    listed = run(["credentials", "list", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    items = {i["student"]["album"]: i for i in json.loads(listed.stdout)}
    removed = items[removed_album]
    assert removed["valid_until"] == "2027-03-31"  # the existing key keeps its meaning
    assert removed["effective_valid_until"] == removal_deadline(REMOVED_ON).isoformat()
    kept = next(i for a, i in items.items() if a != removed_album)
    assert kept["effective_valid_until"] == kept["valid_until"] == "2027-03-31"

    shown = json.loads(run(["credentials", "show", str(removed["id"]), "--json"], env).stdout)
    assert shown["effective_valid_until"] == "2026-10-20"
    table = run(["credentials", "list"], env).stdout
    assert "2026-10-20" in table
    text = run(["credentials", "show", str(removed["id"])], env).stdout
    assert "effective_valid_until" in text and "2026-10-20" in text


# --- the chat never asks to activate after the credential's end --------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
def test_chat_status_of_removed_student_activates_by_the_removal_end(sqlite_ctx: AppContext, lang: str) -> None:
    student_id, _, pesel, album = _removed_with_pending_data(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, album, lang)
    ends = removal_deadline(REMOVED_ON)
    assert _fmt(ends) + " 23:59" in chat.text  # activate by the credential's last day
    assert "04.11.2026" not in chat.text and "31.03.2027" not in chat.text
    # The e-mail says the same.
    assert _fmt(ends) + " 23:59" in _mail_status(sqlite_ctx, student_id, lang)


def test_effective_activation_deadline_is_the_earlier_one(sqlite_ctx: AppContext) -> None:
    student_id, credential_id, _, _ = _removed_with_pending_data(sqlite_ctx)
    with Session(sqlite_ctx.engine) as session:
        student, credential = session.get(Student, student_id), session.get(Credential, credential_id)
        assert student is not None and credential is not None and credential.activation_deadline is not None
        assert service.effective_activation_deadline(student, credential) == end_of_day(date(2026, 10, 20))
        student.status, student.removed_on = "active", None  # reinstated: the data's own deadline
        assert service.effective_activation_deadline(student, credential) == credential.activation_deadline


# --- removal from the student list ------------------------------------------------------------

def _activate(ctx: AppContext, chat: ChatDriver) -> None:
    with unit_of_work(ctx.engine) as session:
        credential = session.exec(select(Credential)).one()
        text = open_body(ctx.box, chat.outbox("activation")[0]).text
        code = activation_code(text)
        service.activate(ctx, session, credential, code, actor="test")


@pytest.mark.parametrize(("language", "phrases"), [
    ("pl", ("aktywna i ważna do 20.10.2026", "najpóźniej 20.10.2026")),
    ("en", ("active and valid until 20.10.2026", "ends on 20.10.2026")),
])
def test_removed_students_status_shows_the_removal_deadline(
    sqlite_ctx: AppContext, language: str, phrases: tuple[str, str],
) -> None:
    chat, student = bound_chat(sqlite_ctx, language)
    apply_in_chat(chat)
    _activate(sqlite_ctx, chat)
    with unit_of_work(sqlite_ctx.engine) as session:
        row = session.get(Student, student.id)
        assert row is not None
        row.status, row.removed_on = "removed", date(2026, 9, 20)  # the removal deadline is 20 October
        session.add(row)
    chat.say("/status")
    assert all(phrase in chat.text for phrase in phrases), chat.text
    assert "31.03.2027" not in chat.text  # the semester's end, later than the removal deadline
