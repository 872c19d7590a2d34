"""What a revoked or ended credential's notice and the chat's status say: a revocation for removal
or graduation points to the dean's office and never says "apply again"; other reasons still do."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.app.context import AppContext
from core.credentials import service
from core.credentials.lifecycle import EndReason, transition
from core.messaging.outbox import open_body
from core.storage.db import make_engine, unit_of_work
from core.storage.models import Credential, CredentialState, OutboxMessage
from tests.chat_driver import ChatDriver
from tests.cli_helpers import cli_environment, run
from tests.factories import issue
from tests.support.chat import bound_chat
from tests.support.lifecycle import enrolled, force_active, queued, request_for, update_student

# --- a staff revocation for removal or graduation does not say "apply again" -------------------

def _revoke_by_staff(ctx: AppContext, reason: EndReason) -> str:
    _, credential_id = issue(ctx)
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        service.revoke(ctx, session, credential, reason=reason, actor="staff:test")  # as `mleg credentials revoke`
    [notice] = queued(ctx, "revoked")
    return open_body(ctx.box, notice).text


@pytest.mark.parametrize(("reason", "phrases"), [
    (EndReason.REMOVAL, ("removed from the student list", "skreślono Cię z listy studentów")),
    (EndReason.GRADUATION, ("graduation", "ukończenie studiów")),
    (EndReason.REMOVAL_GRACE_ENDED, ("removal from the student list", "od skreślenia z listy studentów")),
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


@pytest.mark.process
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
    chat, _ = bound_chat(sqlite_ctx, language)
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    with unit_of_work(sqlite_ctx.engine) as session:
        credential = session.exec(select(Credential)).one()
        service.revoke(sqlite_ctx, session, credential, reason=reason, actor="staff:test")
    chat.say("/status")
    assert says in chat.text and not_says not in chat.text, chat.text


# --- the revocation e-mail's reason in each language ------------------------------------------------

def test_revocation_mail_gives_the_reason_in_each_halfs_language(sqlite_ctx: AppContext) -> None:
    student_id, pesel, album = enrolled(sqlite_ctx)
    force_active(sqlite_ctx, request_for(sqlite_ctx, student_id))
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, album, "pl")
    chat.press("menu:revoke")
    chat.press("revoke:new_phone")
    chat.press("confirm:yes:revoke")
    (row,) = chat.outbox("revoked")
    polish, english = open_body(sqlite_ctx.box, row).text.split("\n----------\n")
    assert "Powód: zmiana telefonu" in polish
    assert "Reason: new phone" in english and "zmiana telefonu" not in english


# --- never "apply again" to an ineligible student ---------------------------------------------------

@pytest.mark.parametrize("end", ["expired", "revoked"])
def test_chat_status_of_an_ended_credential_of_an_ineligible_student(sqlite_ctx: AppContext, end: str) -> None:
    student_id, pesel, album = enrolled(sqlite_ctx)
    credential_id = request_for(sqlite_ctx, student_id)
    force_active(sqlite_ctx, credential_id)
    with unit_of_work(sqlite_ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        if end == "expired":
            transition(session, credential, CredentialState.EXPIRED, actor="test", reason=EndReason.VALIDITY_ENDED,
                       now=sqlite_ctx.clock.now())
        else:
            service.revoke(sqlite_ctx, session, credential, reason=EndReason.LOST_PHONE, actor="test")
    update_student(sqlite_ctx, student_id, status="graduated")
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, album, "en")
    assert "You can apply again" not in chat.text
    assert "A mobile student ID can't be issued to you because" in chat.text
    assert "menu:request" not in chat.buttons
