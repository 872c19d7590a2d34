"""A register that changed between two imports: a changed e-mail address, PESELs moving between
albums, a student's new album, what a sync does to graduated and suspended students.

(Files Excel or a stray quote have mangled: test_register_file_problems.py.)"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from sqlmodel import Session, col, select

from core.app.catalog import Catalog
from core.app.context import AppContext
from core.app.errors import ActivationError, RegisterImportError
from core.credentials import service
from core.jobs import run_due
from core.jobs.sweep import sweep
from core.messaging.outbox import open_body
from core.messaging.sending import mark_sent
from core.storage.db import unit_of_work
from core.storage.models import AuditEvent, BindingCode, ChatLink, Credential, OutboxMessage, Student
from core.students.demo_register import make_pesel
from core.students.email_change import NOTICE_KEY
from core.students.register import ImportReport, import_register
from tests.chat_driver import ChatDriver
from tests.cli_helpers import cli_environment, run
from tests.factories import activation_code
from tests.support.lifecycle import activate, at
from tests.support.register_csv import P1, P2, P3, D, csv_file, csv_line, parse_rows

OTHERS = [(str(3000 + i), "", f"X{i}", "Y", f"x{i}@{D}") for i in range(20)]


def _others() -> list[str]:
    return [csv_line(*other) for other in OTHERS]


def _import(ctx: AppContext, data: bytes, *, sync: bool = False, with_ctx: bool = True) -> ImportReport:
    rows = parse_rows(ctx, data)
    with unit_of_work(ctx.engine) as session:
        return import_register(session, rows, now=ctx.clock.now(), today=ctx.clock.today(), sync=sync,
                               allow_mass_removal=True, ctx=ctx if with_ctx else None)


def _student(ctx: AppContext, album: str) -> Student:
    with Session(ctx.engine) as session:
        return session.exec(select(Student).where(Student.album == album)).one()


def _request(ctx: AppContext, album: str) -> int:
    with unit_of_work(ctx.engine) as session:
        student = session.exec(select(Student).where(Student.album == album)).one()
        return service.request_credential(ctx, session, student, channel="console", actor="student").id or 0


def _credential(ctx: AppContext, credential_id: int) -> Credential:
    with Session(ctx.engine) as session:
        found = session.get(Credential, credential_id)
        assert found is not None
        return found


def _outbox(ctx: AppContext, **where: object) -> list[OutboxMessage]:
    with Session(ctx.engine) as session:
        query = select(OutboxMessage).order_by(col(OutboxMessage.id))
        for name, value in where.items():
            query = query.where(getattr(OutboxMessage, name) == value)
        return list(session.exec(query).all())


def _audit(ctx: AppContext, action: str) -> list[AuditEvent]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == action)).all())


def _without_notice_text(ctx: AppContext, tmp_path: Path) -> None:
    """An installation's own catalogs that have no e-mail-change notice."""
    messages = tmp_path / "messages"
    shutil.copytree(ctx.settings.config_dir / "messages", messages)
    for path in messages.glob("*/email.toml"):
        text = path.read_text(encoding="utf-8")
        start = text.index(f"[{NOTICE_KEY}]")
        path.write_text(text[:start] + text[text.index("\n[", start + 1) + 1:], encoding="utf-8")
    ctx.catalog = Catalog.load(messages)
    assert not ctx.catalog.has("pl", f"{NOTICE_KEY}.subject")


# --- 1. a changed e-mail address ---------------------------------------------------------------

def test_changed_email_kills_what_was_meant_for_the_old_address(ctx: AppContext) -> None:
    _import(ctx, csv_file(csv_line("2001", P2, "Jan", "Kowalski", f"old.jan@{D}"),
                          csv_line("2002", P3, "Ewa", "Nowak", f"ewa@{D}")))
    credential_id = _request(ctx, "2001")
    [activation] = _outbox(ctx, kind="activation")
    assert activation.recipient == f"old.jan@{D}"
    code = activation_code(open_body(ctx.box, activation).text)
    # A chat binding code for the other student, mailed to her old address and not typed yet.
    chat = ChatDriver(ctx, account="a2")
    chat.start_in("pl")
    chat.say(P3)
    chat.say("2002")
    binding = chat.binding_code()
    # A mail already sent to the old address stays as it was (sent is sent).
    with unit_of_work(ctx.engine) as session:
        [row] = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "binding-code")).all()
        mark_sent(row, ctx.clock.now())
        session.add(row)

    report = _import(ctx, csv_file(csv_line("2001", P2, "Jan", "Kowalski", f"new.jan@{D}"),
                                   csv_line("2002", P3, "Ewa", "Nowak", f"ewa.new@{D}")))
    [activation] = _outbox(ctx, kind="activation")
    # Cancelled, not failed: nothing for staff to mend, no delivery alert; the reason is on the row.
    assert activation.status == "cancelled" and activation.body is None
    assert "e-mail address changed" in (activation.last_error or "")
    assert _outbox(ctx, kind="binding-code")[0].status == "sent"
    credential = _credential(ctx, credential_id)
    assert credential.state == "revoked" and credential.end_reason == "email_changed"
    assert credential.code_hash is None
    with unit_of_work(ctx.engine) as session, pytest.raises(ActivationError):
        found = session.get(Credential, credential_id)
        assert found is not None
        service.activate(ctx, session, found, code, actor="student")
    # The code in the old mailbox no longer binds; a new one goes to the new address.
    chat.say(binding)
    with Session(ctx.engine) as session:
        assert session.exec(select(BindingCode).where(col(BindingCode.used_at).is_not(None))).all() == []
    assert "code:resend" in chat.buttons
    chat.press("code:resend")
    assert _outbox(ctx, kind="binding-code")[-1].recipient == f"ewa.new@{D}"
    # Audited, without the addresses.
    events = _audit(ctx, "register.email_changed")
    assert len(events) == 2
    assert all("@" not in event.detail for event in events)
    assert any(json.loads(event.detail)["credentials_revoked"] == [credential_id] for event in events)
    assert (report.email_changed, report.activations_revoked, report.mail_cancelled) == (2, 1, 1)


def test_changed_email_tells_the_student_at_the_new_address(ctx: AppContext) -> None:
    _import(ctx, csv_file(csv_line("2001", P2, "Jan", "Kowalski", f"old.jan@{D}")))
    _request(ctx, "2001")
    _import(ctx, csv_file(csv_line("2001", P2, "Jan", "Kowalski", f"new.jan@{D}")))
    [notice] = _outbox(ctx, kind="email_changed")
    assert notice.recipient == f"new.jan@{D}" and notice.status == "pending"
    assert "/request" in open_body(ctx.box, notice).text
    assert not [m for m in _outbox(ctx) if m.recipient == f"old.jan@{D}" and m.status == "pending"]


def test_without_the_notice_text_nothing_is_queued(ctx: AppContext, tmp_path: Path) -> None:
    _without_notice_text(ctx, tmp_path)
    _import(ctx, csv_file(csv_line("2001", P2, "Jan", "Kowalski", f"old.jan@{D}")))
    _request(ctx, "2001")
    _import(ctx, csv_file(csv_line("2001", P2, "Jan", "Kowalski", f"new.jan@{D}")))
    assert _outbox(ctx, kind="email_changed") == []
    assert _outbox(ctx, recipient=f"new.jan@{D}") == []


def test_changed_email_leaves_an_active_credential_alone(ctx: AppContext) -> None:
    _import(ctx, csv_file(csv_line("2001", P2, "Jan", "Kowalski", f"old.jan@{D}")))
    credential_id = _request(ctx, "2001")
    activate(ctx, credential_id)
    report = _import(ctx, csv_file(csv_line("2001", P2, "Jan", "Kowalski", f"new.jan@{D}")))
    assert _credential(ctx, credential_id).state == "active"
    assert report.email_changed == 1 and report.activations_revoked == 0


# --- 2. a PESEL moving between two albums in the file --------------------------------------------

def test_pesel_moves_and_swaps_between_albums(ctx: AppContext) -> None:
    a = csv_line("1001", P1, "A", "B", f"a@{D}"), csv_line("1002", "", "C", "D", f"c@{D}"), \
        csv_line("1003", P3, "E", "F", f"e@{D}")
    _import(ctx, csv_file(*a))
    # The PESEL was on the wrong album: it moves to 1002, 1001 keeps none.
    _import(ctx, csv_file(csv_line("1002", P1, "C", "D", f"c@{D}"), csv_line("1001", "", "A", "B", f"a@{D}"), a[2]))
    assert _student(ctx, "1002").pesel_hash == ctx.box.pesel_hash(P1)
    assert _student(ctx, "1001").pesel_hash is None
    # Two albums swap theirs.
    _import(ctx, csv_file(csv_line("1002", P3, "C", "D", f"c@{D}"), csv_line("1003", P1, "E", "F", f"e@{D}"),
                          csv_line("1001", "", "A", "B", f"a@{D}")))
    assert _student(ctx, "1002").pesel_hash == ctx.box.pesel_hash(P3)
    assert _student(ctx, "1003").pesel_hash == ctx.box.pesel_hash(P1)


@pytest.mark.process
def test_pesel_swap_in_the_cli_dry_run_and_sync(tmp_path: Path, sqlite_url: str) -> None:
    env = cli_environment(tmp_path, sqlite_url)
    first, swapped = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_bytes(csv_file(csv_line("1001", P1, "A", "B", f"a@{D}"), csv_line("1003", P3, "E", "F", f"e@{D}")))
    swapped.write_bytes(csv_file(csv_line("1001", P3, "A", "B", f"a@{D}"), csv_line("1003", P1, "E", "F", f"e@{D}")))
    assert run(["registry", "import", str(first)], env).returncode == 0
    for extra in (["--dry-run"], ["--sync", "--dry-run"], ["--sync"]):
        result = run(["registry", "import", str(swapped), *extra], env)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr and "2 updated" in result.stdout


def test_pesel_swap_in_the_scheduled_sync(ctx: AppContext, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "students.csv"
    path.write_bytes(csv_file(csv_line("1001", P1, "A", "B", f"a@{D}"), csv_line("1003", P3, "E", "F", f"e@{D}")))
    ctx.settings.jobs.register_sync_path = str(path)
    at(ctx, "2026-10-05T02:00:00+02:00")
    assert run_due(ctx)["register_sync"]["added"] == 2
    path.write_bytes(csv_file(csv_line("1001", P3, "A", "B", f"a@{D}"), csv_line("1003", P1, "E", "F", f"e@{D}")))
    at(ctx, "2026-10-05T03:00:00+02:00")
    with caplog.at_level(logging.INFO):
        result = run_due(ctx)["register_sync"]
    assert f"a@{D}" not in caplog.text and ctx.box.pesel_hash(P1) not in caplog.text
    assert result["updated"] == 2
    assert _student(ctx, "1001").pesel_hash == ctx.box.pesel_hash(P3)


def test_a_database_refusal_in_the_scheduled_sync_logs_no_data(
    ctx: AppContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise sa_exc.IntegrityError("UPDATE student SET ...", {"pesel_hash": "h", "last_name": "Kowalska"},
                                    Exception(f"duplicate key: {P1}"))

    monkeypatch.setattr("core.students.register._write", refuse)
    path = tmp_path / "students.csv"
    path.write_bytes(csv_file(csv_line("1001", P1, "A", "Kowalska", f"a@{D}")))
    ctx.settings.jobs.register_sync_path = str(path)
    at(ctx, "2026-10-05T02:00:00+02:00")
    with caplog.at_level(logging.INFO):
        result = run_due(ctx)["register_sync"]
    assert result["ok"] is False and result["refused"] is True and "nothing was changed" in result["error"]
    assert P1 not in caplog.text + json.dumps(result) and "Kowalska" not in caplog.text + json.dumps(result)


# --- 3. a student's new album with the same PESEL ------------------------------------------------

def test_new_album_takes_the_pesel_in_a_sync_and_the_credential_follows(ctx: AppContext) -> None:
    _import(ctx, csv_file(csv_line("1001", P1, "A", "B", f"a@{D}"), *_others()))
    credential_id = _request(ctx, "1001")
    activate(ctx, credential_id)
    report = _import(ctx, csv_file(csv_line("5001", P1, "A", "B", f"a@{D}", level="second_cycle"), *_others()),
                     sync=True)
    assert (report.added, report.removed, report.pesel_moved, report.credentials_moved) == (1, 1, 1, 1)
    old, new = _student(ctx, "1001"), _student(ctx, "5001")
    assert old.status == "removed" and old.pesel_hash is None
    assert new.pesel_hash == ctx.box.pesel_hash(P1)
    credential = _credential(ctx, credential_id)
    assert credential.student_id == new.id and credential.state == "active"
    assert _audit(ctx, "credential.moved")
    # Long after the removal grace of the old album, the student's credential still works.
    at(ctx, "2026-12-01T10:00:00+01:00")
    sweep(ctx)
    assert _credential(ctx, credential_id).state == "active"
    assert not _outbox(ctx, kind="revoked")


def test_new_album_takes_the_pesel_in_a_sync_and_the_chat_follows(ctx: AppContext) -> None:
    _import(ctx, csv_file(csv_line("1001", P1, "A", "B", f"a@{D}"), *_others()))
    credential_id = _request(ctx, "1001")
    activate(ctx, credential_id)
    chat = ChatDriver(ctx)
    chat.identify(P1, "1001", language="en")
    old_id = _student(ctx, "1001").id
    assert chat.service.state_of(chat.channel, chat.account).student_id == old_id
    report = _import(ctx, csv_file(csv_line("5001", P1, "A", "B", f"a@{D}", level="second_cycle"), *_others()),
                     sync=True)
    assert report.credentials_moved == 1 and report.chats_moved == 1
    new_id = _student(ctx, "5001").id
    with Session(ctx.engine) as session:
        [link] = session.exec(select(ChatLink).where(ChatLink.account_id == chat.account)).all()
    assert link.student_id == new_id
    assert chat.service.state_of(chat.channel, chat.account).student_id == new_id
    [moved] = _audit(ctx, "chat.moved")
    assert (moved.student_id, json.loads(moved.detail)["from_student_id"]) == (new_id, old_id)
    chat.say("/status")
    assert "Your mobile student ID is active" in chat.text and "removed" not in chat.text
    assert _credential(ctx, credential_id).student_id == new_id


def test_many_new_albums_are_not_a_mass_removal(ctx: AppContext) -> None:
    firsts = [csv_line(str(1000 + i), make_pesel(date(2003, 1, 1 + i), i, False), "A", "B", f"s{i}@{D}")
              for i in range(10)]
    _import(ctx, csv_file(*firsts, *_others()))
    seconds = [str(5000 + i) + line[len(str(1000 + i)):] for i, line in enumerate(firsts)]
    rows = parse_rows(ctx, csv_file(*seconds, *_others()))
    with unit_of_work(ctx.engine) as session:  # a third of the active students get a new album
        report = import_register(session, rows, now=ctx.clock.now(), today=ctx.clock.today(), sync=True,
                                 max_removed_share=0.2, ctx=ctx)
    assert report.removed == 10 and report.pesel_moved == 10 and report.mass_removal is None


def test_new_album_that_may_not_have_one_leaves_the_credential_to_end(ctx: AppContext) -> None:
    _import(ctx, csv_file(csv_line("1001", P1, "A", "B", f"a@{D}"), *_others()))
    credential_id = _request(ctx, "1001")
    activate(ctx, credential_id)
    report = _import(ctx, csv_file(csv_line("7001", P1, "A", "B", f"a@{D}", level="doctoral"), *_others()), sync=True)
    assert report.pesel_moved == 1 and report.credentials_moved == 0
    assert _credential(ctx, credential_id).student_id == _student(ctx, "1001").id
    assert _student(ctx, "7001").pesel_hash == ctx.box.pesel_hash(P1)


def test_new_album_with_a_new_address_revokes_pending_activation(ctx: AppContext) -> None:
    _import(ctx, csv_file(csv_line("1001", P1, "A", "B", f"a@{D}"), *_others()))
    credential_id = _request(ctx, "1001")
    report = _import(ctx, csv_file(csv_line("5001", P1, "A", "B", f"a.second@{D}", level="second_cycle"),
                                   *_others()), sync=True)
    assert report.credentials_moved == 0 and report.activations_revoked == 1
    assert _credential(ctx, credential_id).state == "revoked"
    assert _outbox(ctx, kind="activation")[0].status == "cancelled"


def test_new_album_without_sync_says_what_to_do_on_its_line(ctx: AppContext) -> None:
    _import(ctx, csv_file(csv_line("1001", P1, "A", "B", f"a@{D}"), *_others()))
    rows = parse_rows(ctx, csv_file(*_others(), csv_line("5001", P1, "A", "B", f"a@{D}", level="second_cycle")))
    with unit_of_work(ctx.engine) as session, pytest.raises(RegisterImportError) as caught:
        import_register(session, rows, now=ctx.clock.now(), today=ctx.clock.today())
    [(line, message)] = caught.value.problems
    assert line == 22 and "--sync" in message and "already in the register" in message
    assert "line 0" not in str(caught.value)


# --- 4. graduated and suspended students missing from a sync's file ---------------------------------

def test_sync_keeps_missing_graduated_and_suspended_students(ctx: AppContext) -> None:
    _import(ctx, csv_file(csv_line("1001", P1, "A", "B", f"a@{D}", status="graduated"),
                          csv_line("1002", P2, "C", "D", f"c@{D}", status="suspended"),
                       csv_line("1003", P3, "E", "F", f"e@{D}"), *_others()))
    report = _import(ctx, csv_file(*_others()), sync=True)
    assert _student(ctx, "1001").status == "graduated" and _student(ctx, "1001").removed_on is None
    assert _student(ctx, "1002").status == "suspended"
    assert _student(ctx, "1003").status == "removed"
    assert report.removed == 1 and report.albums_removed == ["1003"] and report.kept_absent == 2
