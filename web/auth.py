"""Signing staff in and keeping them signed in: rate-limited password + TOTP, server-side sessions, CSRF.

A session is a row (core.storage.models.StaffSession) found by the keyed hash of a random token the
cookie carries; it ends after `web.session_idle_minutes` without a request and after
`web.session_hours` in any case, and at once when the account is disabled. Each session has
its own CSRF token, which every state-changing form sends back. The sign-in form, before any
session, carries a token that must match a cookie of its own (double submit).

Failed sign-ins count against the login and the address (core.security.ratelimit, keys hashed), so
neither guessing one login's password from many addresses nor many logins from one address
goes far. Every outcome is in the audit trail with the login.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.app.errors import RateLimitedError
from core.security import ratelimit
from core.storage import audit
from core.storage.db import unit_of_work
from core.storage.models import StaffAccount, StaffSession
from core.support import staff

__all__ = ["SignIn", "SignedIn", "end_session", "load_session", "sign_in", "sign_in_sso", "tokens_match"]

SIGN_IN_KIND = "web_sign_in"
# A session's last-seen time is written at most this often (an inbox polls every few seconds).
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class SignedIn:
    """The staff member behind a request."""

    staff_id: int
    login: str
    role: str
    csrf: str

    @property
    def admin(self) -> bool:
        return self.role == staff.Role.ADMIN


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in: a token for the cookie, or the reason (a catalog key) it was refused."""

    token: str | None = None
    refused: str | None = None
    until: datetime | None = None


def tokens_match(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


def _token_hash(ctx: AppContext, token: str) -> str:
    return ctx.box.keyed_hash("staff-session", token)


def _scopes(ctx: AppContext, login: str, address: str) -> list[tuple[str, str]]:
    return [("login", ctx.box.keyed_hash("staff-login", login.strip().lower())),
            ("address", ctx.box.keyed_hash("staff-address", address))]


def sign_in(ctx: AppContext, login: str, password: str, code: str, address: str) -> SignIn:
    """Check password and (where required) the TOTP code; open a session on success."""
    web = ctx.settings.web
    now = ctx.clock.now()
    login = login.strip().lower()[:64]
    scopes = _scopes(ctx, login, address)
    limits = {scopes[0]: web.sign_in_attempts_per_login, scopes[1]: web.sign_in_attempts_per_address}
    window = timedelta(minutes=web.sign_in_window_minutes)
    with unit_of_work(ctx.engine) as session:
        try:
            ratelimit.check_allowed(session, SIGN_IN_KIND, scopes, now=now, limit=web.sign_in_attempts_per_login,
                                    window=window, limits=limits)
        except RateLimitedError as exc:
            audit.record(session, at=now, actor=f"web:{login}", action="staff.sign_in_refused", reason="rate_limited")
            return SignIn(refused="sign_in.rate_limited", until=exc.until)
        account = staff.find_account(session, login)
        reason = None
        if not staff.check_password(account, password) or account is None:
            reason = "wrong_password"
        elif account.disabled_at is not None:
            reason = "disabled"
        elif account.role == staff.Role.ADMIN and account.totp_secret is None:
            reason = "totp_not_enrolled"
        elif staff.needs_totp(account) and not staff.check_totp(ctx, account, code, now):
            reason = "wrong_totp"
        if reason is not None:
            if reason in ("wrong_password", "wrong_totp"):
                ratelimit.record_failure(session, SIGN_IN_KIND, scopes, now=now)
            audit.record(session, at=now, actor=f"web:{login}", action="staff.sign_in_failed", reason=reason)
            return SignIn(refused=f"sign_in.{reason}")
        assert account is not None
        staff.rehash_if_needed(account, password)
        token = _open_session(ctx, session, account, address, method="password")
    return SignIn(token=token)


def _open_session(ctx: AppContext, session: Session, account: StaffAccount, address: str, *, method: str) -> str:
    assert account.id is not None
    now = ctx.clock.now()
    account.last_sign_in_at = now
    session.add(account)
    token = secrets.token_urlsafe(32)
    session.add(StaffSession(token_hash=_token_hash(ctx, token), staff_id=account.id,
                             csrf_token=secrets.token_urlsafe(32), address=address[:64],
                             created_at=now, last_seen_at=now))
    audit.record(session, at=now, actor=f"staff:{account.login}", action="staff.signed_in", method=method)
    return token


def sign_in_sso(ctx: AppContext, login: str, amr: list[str], address: str) -> SignIn:
    """Open a session for the account the provider vouched for (its ID token already verified).

    The account must exist and be enabled; an admin only with a second factor the provider names
    in `amr` (web.oidc.admin_amr). Refusals count against the address like wrong passwords.
    """
    now = ctx.clock.now()
    login = login.strip().lower()[:64]
    web = ctx.settings.web
    scopes = _scopes(ctx, login, address)
    with unit_of_work(ctx.engine) as session:
        account = staff.find_account(session, login)
        reason = None
        if account is None:
            reason = "unknown_account"
        elif account.disabled_at is not None:
            reason = "disabled"
        elif account.role == staff.Role.ADMIN and not set(amr) & set(web.oidc.admin_amr):
            reason = "no_mfa"
        if reason is not None:
            ratelimit.record_failure(session, SIGN_IN_KIND, scopes[1:], now=now)
            audit.record(session, at=now, actor=f"oidc:{login}", action="staff.sign_in_failed", reason=reason)
            return SignIn(refused=f"sign_in.sso_{reason}")
        assert account is not None
        token = _open_session(ctx, session, account, address, method="oidc")
    return SignIn(token=token)


def load_session(ctx: AppContext, token: str | None) -> SignedIn | None:
    """The staff member of a session cookie, or None when there is none or it has ended."""
    if not token:
        return None
    web = ctx.settings.web
    now = ctx.clock.now()
    key = _token_hash(ctx, token)
    with Session(ctx.engine) as session:
        row = session.get(StaffSession, key)
        if row is None:
            return None
        account = session.get(StaffAccount, row.staff_id)
        ended = (account is None or account.disabled_at is not None
                 or now - row.last_seen_at > timedelta(minutes=web.session_idle_minutes)
                 or now - row.created_at > timedelta(hours=web.session_hours))
        if ended:
            session.delete(row)
            session.commit()
            return None
        assert account is not None
        if now - row.last_seen_at > TOUCH_EVERY:
            row.last_seen_at = now
            session.add(row)
            session.commit()
        return SignedIn(staff_id=row.staff_id, login=account.login, role=account.role, csrf=row.csrf_token)


def end_session(ctx: AppContext, token: str | None) -> None:
    if not token:
        return
    with unit_of_work(ctx.engine) as session:
        row = session.get(StaffSession, _token_hash(ctx, token))
        if row is not None:
            account = session.get(StaffAccount, row.staff_id)
            session.delete(row)
            audit.record(session, at=ctx.clock.now(), actor=f"staff:{account.login if account else '?'}",
                         action="staff.signed_out")


def sessions_of(session: Session, staff_id: int) -> list[StaffSession]:
    return list(session.exec(select(StaffSession).where(StaffSession.staff_id == staff_id)
                             .order_by(col(StaffSession.created_at))).all())
