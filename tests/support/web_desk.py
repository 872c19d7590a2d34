"""The staff web console's test helpers: staff accounts, signing in over the TestClient, a thread to work on."""

from __future__ import annotations

import re
from datetime import timedelta

import pyotp
from starlette.testclient import TestClient

from core.app.context import AppContext
from core.storage.db import unit_of_work
from core.support import staff
from core.support import threads as support
from tests.factories import add_student

__all__ = ["PASSWORD", "account", "escalated_thread", "form_token", "sign_in", "signed_in_agent", "totp_code"]

PASSWORD = "correct horse battery staple"


def account(ctx: AppContext, login: str, *, admin: bool = False, totp: bool = False) -> str | None:
    with unit_of_work(ctx.engine) as session:
        staff.add_account(ctx, session, login, PASSWORD, role=staff.Role.ADMIN if admin else staff.Role.AGENT,
                          actor="test")
        return staff.enrol_totp(ctx, session, login, actor="test").secret if totp else None


def form_token(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def sign_in(client: TestClient, login: str, password: str = PASSWORD, code: str = "") -> object:
    token = form_token(client.get("/sign-in").text)
    return client.post("/sign-in", data={"csrf": token, "login": login, "password": password, "code": code,
                                         "next": "/inbox"}, follow_redirects=False)


def totp_code(ctx: AppContext, secret: str, steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(ctx.clock.now() + timedelta(seconds=30 * steps))


def escalated_thread(ctx: AppContext) -> int:
    with unit_of_work(ctx.engine) as session:
        student, _ = add_student(session, ctx.box)
        thread = support.open_thread(ctx, session, student_id=student.id, channel="email",
                                     account_id=student.email, text="Czy mogę przyjść osobiście?",
                                     language="pl", subject="Pytanie", email_message_id="<q@example.org>")
        return thread.id or 0


def signed_in_agent(ctx: AppContext, client: TestClient, login: str = "ola") -> str:
    account(ctx, login)
    assert sign_in(client, login).status_code == 303
    return form_token(client.get("/inbox").text)

