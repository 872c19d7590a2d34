"""Resending activation data: new data for the same pending credential, the old code dead, the
deadline kept, the register address only, rate-limited and audited; in core (both databases),
in the console (admins only, CSRF) and as `mleg credentials resend ALBUM`."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from core.app.context import AppContext
from core.app.errors import ActivationError, ConflictError, RateLimitedError
from core.cli import app as cli
from core.credentials import service
from core.messaging.outbox import open_body
from core.storage.db import unit_of_work
from core.storage.models import AuditEvent, Credential, CredentialEvent, CredentialState, OutboxMessage, OutboxStatus
from tests.factories import TEST_SECRET, add_student
from tests.support.web_desk import account, form_token, sign_in, signed_in_agent, totp_code
from web.app import build_app


def _request(ctx: AppContext) -> tuple[int, int, str, str]:
    """(student id, credential id, album, register address) of a student with a pending credential."""
    with unit_of_work(ctx.engine) as session:
        student, _ = add_student(session, ctx.box)
        credential = service.request_credential(ctx, session, student, channel="console", actor="student")
        return student.id or 0, credential.id or 0, student.album, student.email


def _activation_mails(ctx: AppContext, credential_id: int) -> list[tuple[str, str, str]]:
    """(recipient, plain text, code) of every activation mail queued for the credential and not
    cancelled, oldest first."""
    with Session(ctx.engine) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.credential_id == credential_id,
                                                        OutboxMessage.kind == "activation",
                                                        OutboxMessage.status != "cancelled")
                            .order_by(col(OutboxMessage.id))).all()
        mails = []
        for row in rows:
            text = open_body(ctx.box, row).text
            mails.append((row.recipient, text, text.split("Kod aktywacyjny: ")[1].split()[0]))
    return mails


def _deliver_all(ctx: AppContext) -> None:
    """As if the mail server had taken every queued mail (the tests read the bodies, so they are kept)."""
    with unit_of_work(ctx.engine) as session:
        session.execute(sa.update(OutboxMessage).values(status=OutboxStatus.SENT))


def _resend(ctx: AppContext, credential_id: int, actor: str = "staff:kasia") -> None:
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        service.resend_activation(ctx, session, credential, actor=actor)


def _activate(ctx: AppContext, credential_id: int, code: str) -> None:
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        service.activate(ctx, session, credential, code, actor="mobywatel-standin")


def test_a_resend_issues_new_data_to_the_register_address_and_the_old_code_dies(ctx: AppContext) -> None:
    _, credential_id, _, address = _request(ctx)
    with Session(ctx.engine) as session:
        first_deadline = session.get(Credential, credential_id).activation_deadline  # type: ignore[union-attr]
    [(to_1, text_1, old_code)] = _activation_mails(ctx, credential_id)
    _deliver_all(ctx)
    ctx.clock.advance(days=3)  # type: ignore[attr-defined]
    _resend(ctx, credential_id)

    [_, (to_2, text_2, new_code)] = _activation_mails(ctx, credential_id)
    assert to_1 == to_2 == address
    assert new_code != old_code
    assert "zastępuje wysłane wcześniej" in text_2 and "replaces the activation data" in text_2
    assert "zastępuje" not in text_1
    with Session(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None and credential.state == CredentialState.PENDING_ACTIVATION
        # The window of the application, not of the e-mail: the deadline did not move.
        assert credential.activation_deadline == first_deadline
        events = session.exec(select(CredentialEvent).where(CredentialEvent.credential_id == credential_id)
                              .order_by(col(CredentialEvent.id))).all()
        assert (events[-1].reason, events[-1].actor) == ("activation_data_reissued", "staff:kasia")
        audited = session.exec(select(AuditEvent).where(AuditEvent.action == "credential.activation_resent")).all()
        assert [(a.actor, a.credential_id) for a in audited] == [("staff:kasia", credential_id)]
    with pytest.raises(ActivationError):
        _activate(ctx, credential_id, old_code)
    _activate(ctx, credential_id, new_code)
    with Session(ctx.engine) as session:
        assert session.get(Credential, credential_id).state == CredentialState.ACTIVE  # type: ignore[union-attr]


def test_only_a_pending_credential_within_its_window_is_resent(ctx: AppContext) -> None:
    _, credential_id, _, _ = _request(ctx)
    ctx.clock.advance(days=31)  # type: ignore[attr-defined]
    with pytest.raises(ConflictError, match="window has passed"):
        _resend(ctx, credential_id)
    _, active_id, _, _ = _request(ctx)
    _activate(ctx, active_id, _activation_mails(ctx, active_id)[0][2])
    with pytest.raises(ConflictError, match="not waiting for activation"):
        _resend(ctx, active_id)
    assert len(_activation_mails(ctx, credential_id)) == len(_activation_mails(ctx, active_id)) == 1


def test_resends_are_limited_per_credential_and_day(ctx: AppContext) -> None:
    _, credential_id, _, _ = _request(ctx)
    limit = ctx.settings.credential.activation_resends_per_day
    for _ in range(limit):
        _deliver_all(ctx)
        ctx.clock.advance(minutes=5)  # type: ignore[attr-defined]
        _resend(ctx, credential_id)
    with pytest.raises(RateLimitedError):
        _resend(ctx, credential_id)
    assert len(_activation_mails(ctx, credential_id)) == 1 + limit
    _deliver_all(ctx)
    ctx.clock.advance(days=1)  # type: ignore[attr-defined]
    _resend(ctx, credential_id)
    assert len(_activation_mails(ctx, credential_id)) == 2 + limit


def test_a_mail_of_the_old_data_still_waiting_in_the_outbox_is_withdrawn(ctx: AppContext) -> None:
    """The mail server was away: the first mail is still queued when staff resend. Only the new data
    go out; a mail already being sent (leased) is left to finish, and sent ones stay on record."""
    _, credential_id, _, _ = _request(ctx)
    _, sending_id, _, _ = _request(ctx)
    with unit_of_work(ctx.engine) as session:
        session.execute(sa.update(OutboxMessage).where(col(OutboxMessage.credential_id) == sending_id)
                        .values(status=OutboxStatus.SENDING))
    ctx.clock.advance(hours=2)  # type: ignore[attr-defined]
    _resend(ctx, credential_id)
    _resend(ctx, sending_id)

    [(_, text, new_code)] = _activation_mails(ctx, credential_id)
    assert "zastępuje wysłane wcześniej" in text
    assert len(_activation_mails(ctx, sending_id)) == 2
    _activate(ctx, credential_id, new_code)
    # The withdrawn one stays on record, its dead data wiped, the reason given; not a failure.
    with Session(ctx.engine) as session:
        [withdrawn] = session.exec(select(OutboxMessage).where(OutboxMessage.status == "cancelled")).all()
    assert (withdrawn.credential_id, withdrawn.body) == (credential_id, None)
    assert withdrawn.last_error == "cancelled: new activation data was sent in its place"


@pytest.fixture
def desk_client(sqlite_ctx: AppContext) -> TestClient:
    sqlite_ctx.settings.web.secure_cookies = False
    return TestClient(build_app(sqlite_ctx))


def test_an_admin_resends_from_the_credentials_page(sqlite_ctx: AppContext, desk_client: TestClient) -> None:
    student_id, credential_id, _, address = _request(sqlite_ctx)
    _deliver_all(sqlite_ctx)
    secret = account(sqlite_ctx, "kasia", admin=True, totp=True)
    assert sign_in(desk_client, "kasia", code=totp_code(sqlite_ctx, secret or "")).status_code == 303
    page = desk_client.get(f"/students/{student_id}").text
    assert f'action="/credentials/{credential_id}/resend"' in page
    forged = desk_client.post(f"/credentials/{credential_id}/resend", data={"csrf": "forged"})
    assert forged.status_code == 403 and len(_activation_mails(sqlite_ctx, credential_id)) == 1
    done = desk_client.post(f"/credentials/{credential_id}/resend", data={"csrf": form_token(page)})
    assert done.status_code == 200 and "wcześniejszy kod już nie działa" in done.text
    assert [m[0] for m in _activation_mails(sqlite_ctx, credential_id)] == [address, address]
    with Session(sqlite_ctx.engine) as session:
        audited = session.exec(select(AuditEvent).where(AuditEvent.action == "credential.activation_resent")).all()
    assert [a.actor for a in audited] == ["staff:kasia"]
    for _ in range(sqlite_ctx.settings.credential.activation_resends_per_day - 1):
        desk_client.post(f"/credentials/{credential_id}/resend", data={"csrf": form_token(page)})
    limited = desk_client.post(f"/credentials/{credential_id}/resend", data={"csrf": form_token(page)})
    assert "zbyt wiele razy" in limited.text
    # An active credential has nothing to resend: no button, and a POST is refused in words.
    _activate(sqlite_ctx, credential_id, _activation_mails(sqlite_ctx, credential_id)[-1][2])
    assert "/resend" not in desk_client.get(f"/students/{student_id}").text
    refused = desk_client.post(f"/credentials/{credential_id}/resend", data={"csrf": form_token(page)})
    assert "czekającej na aktywację" in refused.text


def test_an_agent_cannot_resend(sqlite_ctx: AppContext, desk_client: TestClient) -> None:
    _, credential_id, _, _ = _request(sqlite_ctx)
    csrf = signed_in_agent(sqlite_ctx, desk_client)
    refused = desk_client.post(f"/credentials/{credential_id}/resend", data={"csrf": csrf})
    assert refused.status_code == 403
    assert len(_activation_mails(sqlite_ctx, credential_id)) == 1


def test_mleg_credentials_resend_album(sqlite_ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    sqlite_ctx.clock.set(datetime.now(UTC))  # type: ignore[attr-defined]  # the CLI reads the real clock
    _, credential_id, album, address = _request(sqlite_ctx)
    _deliver_all(sqlite_ctx)
    monkeypatch.setenv("MLEG_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("MLEG_DATABASE_URL", sqlite_ctx.settings.effective_database_url)
    runner = CliRunner()
    done = runner.invoke(cli, ["credentials", "resend", album, "--by", "kasia"])
    assert done.exit_code == 0, done.output
    assert re.search(r"new activation data sent to the register address \(activate by .+, as before\)", done.output)
    assert [m[0] for m in _activation_mails(sqlite_ctx, credential_id)] == [address, address]
    unknown = runner.invoke(cli, ["credentials", "resend", "no-such-album"])
    assert unknown.exit_code != 0 and "no student with album" in unknown.output
    _activate(sqlite_ctx, credential_id, _activation_mails(sqlite_ctx, credential_id)[-1][2])
    nothing = runner.invoke(cli, ["credentials", "resend", album])
    assert nothing.exit_code != 0 and "no credential waiting for activation" in nothing.output
    assert len(_activation_mails(sqlite_ctx, credential_id)) == 2

