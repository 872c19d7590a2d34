"""The staff web console over HTTP (Starlette's TestClient): sign-in, sessions, CSRF, roles, shared thread state."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlmodel import Session, col, select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from core.app.context import AppContext
from core.cli import app as cli
from core.credentials import service as credentials
from core.messaging import outbox
from core.security import lockout, ratelimit
from core.storage.db import unit_of_work
from core.storage.models import (
    AuditEvent,
    Credential,
    CredentialState,
    GuessAttempt,
    InboundMail,
    InboundMailRaw,
    OutboxMessage,
    SupportThread,
)
from core.support import answers as staff_answers
from core.support import staff
from core.support import threads as support
from tests.cli_helpers import PROJECT_ROOT, cli_environment
from tests.factories import TEST_SECRET, add_student
from tests.servers.dovecot import free_port
from tests.support.web_desk import PASSWORD, account, escalated_thread, form_token, sign_in, signed_in_agent, totp_code
from web.app import build_app


@pytest.fixture
def desk_ctx(sqlite_ctx: AppContext) -> AppContext:
    sqlite_ctx.settings.web.secure_cookies = False  # the TestClient speaks plain HTTP
    return sqlite_ctx



@pytest.fixture
def client(desk_ctx: AppContext) -> Iterator[TestClient]:
    with TestClient(build_app(desk_ctx)) as test_client:
        yield test_client


def _failures(ctx: AppContext) -> list[GuessAttempt]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(GuessAttempt).where(GuessAttempt.kind == "web_sign_in")).all())


def _audit(ctx: AppContext, action: str) -> list[AuditEvent]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == action)
                                 .order_by(col(AuditEvent.id))).all())


def test_an_admin_signs_in_with_password_and_totp_and_a_wrong_code_is_refused_and_counted(
        desk_ctx: AppContext, client: TestClient) -> None:
    secret = account(desk_ctx, "kasia", admin=True, totp=True)
    assert secret is not None
    assert client.get("/inbox", follow_redirects=False).headers["location"].startswith("/sign-in")

    refused = sign_in(client, "kasia", code="000000" if totp_code(desk_ctx, secret) != "000000" else "111111")
    assert refused.status_code == 403 and "Zły kod z aplikacji" in refused.text
    assert len(_failures(desk_ctx)) == 2  # against the login and the address
    assert json.loads(_audit(desk_ctx, "staff.sign_in_failed")[0].detail) == {"reason": "wrong_totp"}
    assert sign_in(client, "kasia").status_code == 403  # no code at all: refused too

    good = sign_in(client, "kasia", code=totp_code(desk_ctx, secret))
    assert good.status_code == 303 and good.headers["location"] == "/inbox"
    cookie = good.headers["set-cookie"]
    assert "mleg_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/inbox").status_code == 200
    assert [e.actor for e in _audit(desk_ctx, "staff.signed_in")] == ["staff:kasia"]

    # The same code again (a shoulder-surfer right after): refused, even with the password.
    other = TestClient(build_app(desk_ctx))
    assert sign_in(other, "kasia", code=totp_code(desk_ctx, secret)).status_code == 403


def test_an_admin_without_a_second_factor_cannot_sign_in(desk_ctx: AppContext, client: TestClient) -> None:
    account(desk_ctx, "root", admin=True)
    response = sign_in(client, "root")
    assert response.status_code == 403 and "mleg staff totp" in response.text


def test_sign_in_is_rate_limited_per_login_and_the_right_password_then_waits(
        desk_ctx: AppContext, client: TestClient) -> None:
    account(desk_ctx, "tomek")
    for _ in range(desk_ctx.settings.web.sign_in_attempts_per_login):
        assert sign_in(client, "tomek", password="wrong password!!").status_code == 403
    assert sign_in(client, "tomek").status_code == 429
    desk_ctx.clock.advance(minutes=desk_ctx.settings.web.sign_in_window_minutes + 1)
    assert sign_in(client, "tomek").status_code == 303


def test_sign_in_is_rate_limited_per_address_across_logins(desk_ctx: AppContext, client: TestClient) -> None:
    desk_ctx.settings.web.sign_in_attempts_per_address = 3
    account(desk_ctx, "ola")
    for login in ("a1", "a2", "a3"):
        assert sign_in(client, login, password="whatever-guess").status_code == 403
    assert sign_in(client, "ola").status_code == 429


def test_the_sign_in_form_needs_its_token(desk_ctx: AppContext, client: TestClient) -> None:
    account(desk_ctx, "ola")
    forged = client.post("/sign-in", data={"login": "ola", "password": PASSWORD}, follow_redirects=False)
    assert forged.status_code == 403 and "token" in forged.text


def test_a_forged_post_without_the_csrf_token_is_refused(desk_ctx: AppContext, client: TestClient) -> None:
    thread_id = escalated_thread(desk_ctx)
    csrf = signed_in_agent(desk_ctx, client)
    for data in ({}, {"csrf": "forged-token"}):
        refused = client.post(f"/threads/{thread_id}/close", data=data, follow_redirects=False)
        assert refused.status_code == 403
    with Session(desk_ctx.engine) as session:
        assert support.get_thread(session, thread_id).status == "escalated"
    assert [json.loads(e.detail)["reason"] for e in _audit(desk_ctx, "web.refused")] == ["csrf", "csrf"]
    assert client.post(f"/threads/{thread_id}/close", data={"csrf": csrf}).status_code == 200
    with Session(desk_ctx.engine) as session:
        assert support.get_thread(session, thread_id).status == "closed"
    assert [e.actor for e in _audit(desk_ctx, "thread.closed")] == ["staff:ola"]


def test_claims_are_shared_with_the_cli_and_a_take_over_is_asked_for(
        desk_ctx: AppContext, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    thread_id = escalated_thread(desk_ctx)
    csrf = signed_in_agent(desk_ctx, client)
    monkeypatch.setenv("MLEG_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("MLEG_DATABASE_URL", desk_ctx.settings.effective_database_url)
    runner = CliRunner()
    assert runner.invoke(cli, ["threads", "claim", str(thread_id), "--by", "kasia"]).exit_code == 0

    page = client.post(f"/threads/{thread_id}/claim", data={"csrf": csrf})
    assert "kasia" in page.text and 'id="take-over"' in page.text
    taken = client.post(f"/threads/{thread_id}/take-over", data={"csrf": csrf})
    assert 'id="claimed-by">ola<' in taken.text
    shown = json.loads(runner.invoke(cli, ["threads", "show", str(thread_id), "--json"]).output)
    assert shown["claimed_by"] == "ola"
    assert shown["history"][-1]["action"] == "thread.taken_over" and shown["history"][-1]["actor"] == "staff:ola"


def test_a_reply_goes_through_core_to_the_student_s_channel(desk_ctx: AppContext, client: TestClient) -> None:
    thread_id = escalated_thread(desk_ctx)
    csrf = signed_in_agent(desk_ctx, client)
    page = client.get(f"/threads/{thread_id}?answer=email_not_arrived")
    assert "adres uczelniany" in page.text  # the FAQ answer offered as a ready text
    client.post(f"/threads/{thread_id}/reply", data={"csrf": csrf, "text": "Tak, pokój 12."})
    with Session(desk_ctx.engine) as session:
        thread = session.get(SupportThread, thread_id)
        answers = session.exec(select(OutboxMessage).where(OutboxMessage.kind == staff_answers.ANSWER_KIND)).all()
    assert thread is not None and thread.status == "answered"
    assert [(a.channel, a.recipient) for a in answers] == [("email", thread.account_id)]


def test_an_agent_cannot_open_or_use_the_credential_pages(desk_ctx: AppContext, client: TestClient) -> None:
    with unit_of_work(desk_ctx.engine) as session:
        student, _ = add_student(session, desk_ctx.box)
        credential = credentials.request_credential(desk_ctx, session, student, channel="test", actor="test")
        credential_id = credential.id
    csrf = signed_in_agent(desk_ctx, client)
    for path in ("/credentials", f"/students/{student.id}", "/locked", "/audit"):
        assert client.get(path).status_code == 403, path
    refused = client.post(f"/credentials/{credential_id}/revoke", data={"csrf": csrf, "reason": "staff"})
    assert refused.status_code == 403
    with Session(desk_ctx.engine) as session:
        assert session.get(Credential, credential_id).state != CredentialState.REVOKED  # type: ignore[union-attr]
    assert {json.loads(e.detail)["reason"] for e in _audit(desk_ctx, "web.refused")} == {"admin_only"}


def test_an_admin_revokes_with_a_reason_and_the_student_is_told(desk_ctx: AppContext, client: TestClient) -> None:
    with unit_of_work(desk_ctx.engine) as session:
        student, _ = add_student(session, desk_ctx.box)
        credential = credentials.request_credential(desk_ctx, session, student, channel="test", actor="test")
        credential_id, email = credential.id, student.email
    secret = account(desk_ctx, "kasia", admin=True, totp=True)
    assert sign_in(client, "kasia", code=totp_code(desk_ctx, secret or "")).status_code == 303
    found = client.get("/credentials", params={"q": student.album})
    assert f"/students/{student.id}" in found.text
    csrf = form_token(client.get(f"/students/{student.id}").text)
    done = client.post(f"/credentials/{credential_id}/revoke", data={"csrf": csrf, "reason": "lost_phone"})
    assert done.status_code == 200 and 'id="notice"' in done.text
    with Session(desk_ctx.engine) as session:
        revoked = session.get(Credential, credential_id)
        told = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "revoked")).all()
    assert revoked is not None and revoked.state == "revoked" and revoked.end_reason == "lost_phone"
    assert [t.recipient for t in told] == [email]
    assert [e.actor for e in _audit(desk_ctx, "credential.revoked")] == ["staff:kasia"]


def test_a_session_ends_when_idle_too_long_and_after_its_absolute_limit(
        desk_ctx: AppContext, client: TestClient) -> None:
    web = desk_ctx.settings.web
    signed_in_agent(desk_ctx, client)
    desk_ctx.clock.advance(minutes=web.session_idle_minutes - 1)
    assert client.get("/inbox", follow_redirects=False).status_code == 200
    desk_ctx.clock.advance(minutes=web.session_idle_minutes + 1)
    assert client.get("/inbox", follow_redirects=False).status_code == 303

    assert sign_in(client, "ola").status_code == 303
    for _ in range(web.session_hours * 60 // (web.session_idle_minutes - 2) + 1):
        desk_ctx.clock.advance(minutes=web.session_idle_minutes - 2)  # busy all the time
        if client.get("/inbox", follow_redirects=False).status_code == 303:
            break
    else:
        pytest.fail("the session outlived its absolute limit")
    assert desk_ctx.clock.now() - _audit(desk_ctx, "staff.signed_in")[-1].at <= timedelta(
        hours=web.session_hours, minutes=web.session_idle_minutes)


def test_a_disabled_account_loses_its_session_at_once(desk_ctx: AppContext, client: TestClient) -> None:
    signed_in_agent(desk_ctx, client)
    with unit_of_work(desk_ctx.engine) as session:
        staff.disable_account(desk_ctx, session, "ola", actor="test")
    assert client.get("/inbox", follow_redirects=False).status_code == 303
    assert sign_in(client, "ola").status_code == 403


def test_pages_carry_a_strict_csp_and_secure_cookies_by_default(sqlite_ctx: AppContext) -> None:
    assert sqlite_ctx.settings.web.secure_cookies
    with TestClient(build_app(sqlite_ctx), base_url="https://desk.example.edu.pl") as secure:
        page = secure.get("/sign-in")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY"
        cookie = page.headers["set-cookie"]
        assert cookie.startswith("__Host-mleg-sign-in=") and "Secure" in cookie and "HttpOnly" in cookie


def test_healthz_and_metrics(desk_ctx: AppContext, client: TestClient) -> None:
    thread_id = escalated_thread(desk_ctx)
    assert client.get("/healthz").json()["outbox"]["oldest_pending_age_seconds"] is None
    with unit_of_work(desk_ctx.engine) as session:
        staff_answers.staff_reply(desk_ctx, session, thread_id, text="Tak.", staff="ola")
    desk_ctx.clock.advance(minutes=5)
    health = client.get("/healthz").json()
    assert health["ok"] is True and health["database"]["ok"] is True
    assert health["outbox"]["oldest_pending_age_seconds"] == 300.0  # the answer waits for `mleg serve`
    metrics = client.get("/metrics").text
    assert 'mleg_threads{status="answered"} 1.0' in metrics
    assert 'mleg_support_messages_total{channel="email",direction="in"} 1.0' in metrics
    assert 'mleg_outbox_messages{channel="email",status="pending"} 1.0' in metrics
    assert 'mleg_first_answer_seconds{quantile="0.5"} 0.0' in metrics
    assert "mleg_escalations_total 1.0" in metrics


def test_the_staff_cli_adds_lists_disables_and_enrols(
        desk_ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLEG_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("MLEG_DATABASE_URL", desk_ctx.settings.effective_database_url)
    runner = CliRunner()
    added = runner.invoke(cli, ["staff", "add", "Kasia", "--admin", "--password-stdin"], input=PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    short = runner.invoke(cli, ["staff", "add", "tomek", "--password-stdin"], input="short\n")
    assert short.exit_code == 2 and "at least" in short.output
    enrolled = runner.invoke(cli, ["staff", "totp", "kasia"])
    assert enrolled.exit_code == 0 and "otpauth://totp/" in enrolled.output and "kasia" in enrolled.output
    listed = json.loads(runner.invoke(cli, ["staff", "list", "--json"]).output)["staff"]
    assert [(s["login"], s["role"], s["totp"]) for s in listed] == [("kasia", "admin", True)]
    assert runner.invoke(cli, ["staff", "disable", "kasia"]).exit_code == 0
    assert json.loads(runner.invoke(cli, ["staff", "list", "--json"]).output)["staff"][0]["disabled_at"]
    with Session(desk_ctx.engine) as session:
        account = staff.find_account(session, "kasia")
        assert account is not None and PASSWORD not in account.password_hash
        assert account.password_hash.startswith("$argon2")


def test_the_inbox_poll_answers_nothing_until_a_new_escalation_arrives(
        desk_ctx: AppContext, client: TestClient) -> None:
    first = escalated_thread(desk_ctx)
    signed_in_agent(desk_ctx, client)
    page = client.get("/inbox").text
    poll = re.search(r'hx-get="(/inbox/rows\?[^"]+)"', page)
    assert poll and 'hx-trigger="every 10s"' in page
    url = poll.group(1).replace("&amp;", "&")
    assert client.get(url).status_code == 204  # nothing new: htmx swaps nothing
    second = escalated_thread(desk_ctx)
    rows = client.get(url)
    assert rows.status_code == 200
    assert f'data-thread="{second}"' in rows.text and f'data-thread="{first}"' in rows.text
    fresh = re.search(r'hx-get="(/inbox/rows\?[^"]+)"', rows.text)
    assert fresh and client.get(fresh.group(1).replace("&amp;", "&")).status_code == 204


def test_a_notice_made_up_in_the_url_is_shown_as_its_key_not_an_error(
        desk_ctx: AppContext, client: TestClient) -> None:
    thread_id = escalated_thread(desk_ctx)
    signed_in_agent(desk_ctx, client)
    page = client.get(f"/threads/{thread_id}", params={"notice": "made_up"})
    assert page.status_code == 200 and "thread.notice.made_up" in page.text


@pytest.mark.process
def test_mleg_web_runs_the_console_alone_and_stops_on_sigterm(desk_ctx: AppContext, tmp_path: Path) -> None:
    port = free_port()
    env = cli_environment(tmp_path, desk_ctx.settings.effective_database_url, MLEG_WEB__SECURE_COOKIES="false")
    process = subprocess.Popen([sys.executable, "-m", "core.cli", "web", "--port", str(port)], env=env,
                               cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                time.sleep(0.1)
        else:
            pytest.fail("mleg web did not answer")
        assert health.json()["database"]["ok"] is True
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_what_is_done_in_the_console_is_told_in_the_staff_room(desk_ctx: AppContext, client: TestClient) -> None:
    desk_ctx.settings.telegram.token = SecretStr("123:abc")
    desk_ctx.settings.telegram.staff_chat_id = -100123
    thread_id = escalated_thread(desk_ctx)
    csrf = signed_in_agent(desk_ctx, client)
    for action, data in (("claim", {}), ("reply", {"text": "Tak."}), ("close", {})):
        client.post(f"/threads/{thread_id}/{action}", data={"csrf": csrf, **data})
    with Session(desk_ctx.engine) as session:
        notes = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "staff-note")
                             .order_by(col(OutboxMessage.id))).all()
        texts = [outbox.open_body(desk_ctx.box, n).text for n in notes]
    assert {n.channel for n in notes} == {"staff"} and {n.recipient for n in notes} == {"-100123"}
    t = desk_ctx.catalog.text
    assert texts == [t("pl", "bot.staff.claimed", thread=thread_id, staff="ola (web)"),
                     t("pl", "bot.staff.answered", thread=thread_id),
                     t("pl", "bot.staff.closed", thread=thread_id, staff="ola (web)")]


def _admin_client(ctx: AppContext, client: TestClient) -> str:
    secret = account(ctx, "kasia", admin=True, totp=True)
    assert sign_in(client, "kasia", code=totp_code(ctx, secret or "")).status_code == 303
    return form_token(client.get("/inbox").text)


def _quarantined(ctx: AppContext, n: int) -> int:
    with unit_of_work(ctx.engine) as session:
        mail = InboundMail(mailbox="INBOX", uidvalidity=1, uid=n, message_id=f"<q{n}@example.org>", digest=f"{n:064d}",
                           size=10, status="quarantined", error="UnicodeDecodeError: broken",
                           received_at=ctx.clock.now())
        session.add(mail)
        session.flush()
        session.add(InboundMailRaw(inbound_id=mail.id or 0, raw=b"broken"))
        return mail.id or 0


def test_quarantine_is_listed_for_agents_and_released_or_deleted_by_admins(
        desk_ctx: AppContext, client: TestClient) -> None:
    kept, dropped = _quarantined(desk_ctx, 1), _quarantined(desk_ctx, 2)
    agent = TestClient(build_app(desk_ctx))
    csrf = signed_in_agent(desk_ctx, agent)
    page = agent.get("/quarantine").text
    assert "&lt;q1@example.org&gt;" in page and "UnicodeDecodeError" in page
    assert agent.post(f"/quarantine/{kept}/release", data={"csrf": csrf}).status_code == 403
    admin_csrf = _admin_client(desk_ctx, client)
    assert "Wiadomość przywrócona" in client.post(f"/quarantine/{kept}/release", data={"csrf": admin_csrf}).text
    assert "Wiadomość usunięta" in client.post(f"/quarantine/{dropped}/delete", data={"csrf": admin_csrf}).text
    with Session(desk_ctx.engine) as session:
        released = session.get(InboundMail, kept)
        assert released is not None and released.status == "new"  # the mail reader handles it again
        assert session.get(InboundMail, dropped) is None and session.get(InboundMailRaw, dropped) is None
    assert [e.actor for e in _audit(desk_ctx, "inbound_mail.released")] == ["staff:kasia"]
    assert len(_audit(desk_ctx, "inbound_mail.deleted")) == 1


def test_an_admin_lifts_a_lock_and_it_is_audited(desk_ctx: AppContext, client: TestClient) -> None:
    now = desk_ctx.clock.now()
    with unit_of_work(desk_ctx.engine) as session:
        student, _ = add_student(session, desk_ctx.box, first_name="Zofia")
        for _ in range(3):
            ratelimit.record(session, "identify", [("student", student.pesel_hash or "")], now=now)
        lockout.notify_locked(desk_ctx, session, student, now + timedelta(hours=1), now=now)
        album = student.album
    csrf = _admin_client(desk_ctx, client)
    listed = client.get("/locked").text
    assert "Zofia" in listed and album in listed
    done = client.post("/locked/unlock", data={"csrf": csrf, "album": album})
    assert "Blokada zdjęta (3 nieudane próby usunięte)" in done.text
    assert "Zofia" not in client.get("/locked").text.split("<tbody>")[1].split("</tbody>")[0]
    assert [e.actor for e in _audit(desk_ctx, "student.unlocked")] == ["staff:kasia"]
    unknown = client.post("/locked/unlock", data={"csrf": csrf, "album": "no-such"})
    assert "Nie ma studenta" in unknown.text


def test_inbox_filters_and_search(desk_ctx: AppContext, client: TestClient) -> None:
    first, second = escalated_thread(desk_ctx), escalated_thread(desk_ctx)
    with unit_of_work(desk_ctx.engine) as session:
        support.claim_thread(desk_ctx, session, first, staff="ola")
        support.add_message(desk_ctx, session, support.get_thread(session, second), text="Zgubiłem telefon",
                            author="x")
    signed_in_agent(desk_ctx, client)

    def shown(**params: str) -> set[int]:
        return {int(n) for n in re.findall(r'data-thread="(\d+)"', client.get("/inbox", params=params).text)}

    assert shown() == {first, second}
    assert shown(claimed="me") == {first} and shown(claimed="nobody") == {second}
    assert shown(status="claimed") == {first} and shown(channel="telegram") == set()
    assert shown(q="zgubiłem") == {second}
    assert shown(q=f"[MLEG-{second}]") == {second}


def test_dashboard_and_audit_log_and_the_english_desk(desk_ctx: AppContext, client: TestClient) -> None:
    escalated_thread(desk_ctx)
    csrf = _admin_client(desk_ctx, client)
    dashboard = client.get("/dashboard").text
    assert dashboard.count("<svg") == 2 and "style=" not in dashboard  # the CSP allows no inline style
    audit_page = client.get("/audit", params={"actor": "kasia", "action": "staff."}).text
    assert "staff.signed_in" in audit_page and "thread.escalated" not in audit_page
    english = client.post("/language", data={"csrf": csrf, "language": "en", "next": "/dashboard"})
    assert "Escalations and automatic answers per day" in english.text


@pytest.mark.postgres
def test_every_page_renders_on_sqlite_and_postgresql(ctx: AppContext) -> None:
    ctx.settings.web.secure_cookies = False
    thread_id = escalated_thread(ctx)
    _quarantined(ctx, 7)
    with unit_of_work(ctx.engine) as session:
        student, _ = add_student(session, ctx.box)
        credentials.request_credential(ctx, session, student, channel="test", actor="test")
        lockout.notify_locked(ctx, session, student, ctx.clock.now() + timedelta(hours=1), now=ctx.clock.now())
        staff_answers.staff_reply(ctx, session, thread_id, text="Tak.", staff="ola")
    with TestClient(build_app(ctx)) as client:
        _admin_client(ctx, client)
        for path in ("/inbox", "/inbox/rows", "/inbox?q=pytanie&status=all", f"/threads/{thread_id}", "/quarantine",
                     "/dashboard", f"/credentials?q={student.album}", f"/students/{student.id}", "/locked",
                     "/audit?actor=kasia&since=2020-01-01&until=2030-01-01", "/healthz", "/metrics"):
            response = client.get(path)
            assert response.status_code == 200, (path, response.text[:500])
        assert 'mleg_threads{status="answered"} 1.0' in client.get("/metrics").text
        assert client.get("/healthz").json()["jobs"]["leader"]["held"] is (
            False if ctx.engine.dialect.name == "postgresql" else None)
