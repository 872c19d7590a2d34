"""Help-desk accounts of the web console: argon2 passwords, TOTP second factor, roles, disabling.

Managed from the terminal (`mleg staff`); the console (package web/) signs staff in with
`check_password` and `check_totp`. The TOTP secret is kept encrypted with the installation's
secret (core.security.secrets_box), and a code is taken at most once: the last time step accepted is
stored, so a code read over someone's shoulder is useless once it was used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.app.errors import ConflictError, MlegError, NotFoundError
from core.storage import audit
from core.storage.models import StaffAccount, StaffSession

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "Role",
    "StaffAccountError",
    "TotpEnrolment",
    "add_account",
    "check_password",
    "check_totp",
    "disable_account",
    "enrol_totp",
    "find_account",
    "list_accounts",
    "needs_totp",
]

MIN_PASSWORD_LENGTH = 12
# One time step either side of now: phones whose clocks drift by up to half a minute still sign in.
TOTP_VALID_WINDOW = 1
_hasher = PasswordHasher()
# The password hash of an account that signs in only through single sign-on: no password verifies.
SSO_ONLY = "!sso-only"
# Checked against when the login is unknown, so an unknown login costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class StaffAccountError(MlegError):
    """A login or password that cannot be accepted."""


class Role(StrEnum):
    AGENT = "agent"  # threads
    ADMIN = "admin"  # threads, credentials, locked-out students, staff accounts


def _valid_login(login: str) -> str:
    login = login.strip().lower()
    if not login or len(login) > 64 or not all(c.isalnum() or c in "._-@" for c in login):
        raise StaffAccountError("a login is 1-64 letters, digits and . _ - @")
    return login


def find_account(session: Session, login: str) -> StaffAccount | None:
    return session.exec(select(StaffAccount).where(StaffAccount.login == login.strip().lower())).first()


def _account(session: Session, login: str) -> StaffAccount:
    account = find_account(session, login)
    if account is None:
        raise NotFoundError(f"no staff account {login!r}")
    return account


def list_accounts(session: Session) -> list[StaffAccount]:
    return list(session.exec(select(StaffAccount).order_by(col(StaffAccount.login))).all())


def add_account(ctx: AppContext, session: Session, login: str, password: str | None, *, role: Role,
                actor: str) -> StaffAccount:
    """A new account; `password=None` makes one that signs in only through single sign-on (OIDC)."""
    login = _valid_login(login)
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise StaffAccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if find_account(session, login) is not None:
        raise ConflictError(f"staff account {login!r} exists already")
    now = ctx.clock.now()
    password_hash = SSO_ONLY if password is None else _hasher.hash(password)
    account = StaffAccount(login=login, role=role.value, password_hash=password_hash, created_at=now)
    session.add(account)
    session.flush()
    audit.record(session, at=now, actor=actor, action="staff.added", login=login, role=role.value,
                 sso_only=password is None)
    return account


def disable_account(ctx: AppContext, session: Session, login: str, *, actor: str) -> StaffAccount:
    """The account can no longer sign in; its open sessions end at once."""
    account = _account(session, login)
    if account.disabled_at is not None:
        raise ConflictError(f"staff account {account.login!r} is disabled already")
    now = ctx.clock.now()
    account.disabled_at = now
    session.add(account)
    for open_session in session.exec(select(StaffSession).where(StaffSession.staff_id == account.id)).all():
        session.delete(open_session)
    audit.record(session, at=now, actor=actor, action="staff.disabled", login=account.login)
    return account


@dataclass(frozen=True)
class TotpEnrolment:
    login: str
    secret: str
    uri: str


def enrol_totp(ctx: AppContext, session: Session, login: str, *, actor: str) -> TotpEnrolment:
    """A new TOTP secret for the account (replacing any earlier one); returns the enrolment URI."""
    account = _account(session, login)
    secret = pyotp.random_base32()
    account.totp_secret = ctx.box.encrypt(secret.encode())
    account.totp_last_step = None
    session.add(account)
    audit.record(session, at=ctx.clock.now(), actor=actor, action="staff.totp_enrolled", login=account.login)
    uri = pyotp.TOTP(secret).provisioning_uri(name=account.login, issuer_name=ctx.settings.web.totp_issuer)
    return TotpEnrolment(login=account.login, secret=secret, uri=uri)


def needs_totp(account: StaffAccount) -> bool:
    """Admins always; an agent once enrolled."""
    return account.role == Role.ADMIN or account.totp_secret is not None


def check_password(account: StaffAccount | None, password: str) -> bool:
    """True when the password is the account's; an unknown account (None) is checked against a
    dummy hash, so the answer takes as long either way."""
    try:
        return _hasher.verify(account.password_hash if account else _DUMMY_HASH, password) and account is not None
    except (VerificationError, InvalidHashError):
        return False


def rehash_if_needed(account: StaffAccount, password: str) -> None:
    """Argon2 parameters raised in a newer library version apply at the next sign-in."""
    if account.password_hash != SSO_ONLY and _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)


def check_totp(ctx: AppContext, account: StaffAccount, code: str, now: datetime) -> bool:
    """True for a current code not used before; records its time step so it is not taken twice."""
    if account.totp_secret is None:
        return False
    code = "".join(code.split())
    if not (code.isdigit() and len(code) == 6):
        return False
    totp = pyotp.TOTP(ctx.box.decrypt(account.totp_secret).decode())
    step_now = totp.timecode(now)
    for step in range(step_now - TOTP_VALID_WINDOW, step_now + TOTP_VALID_WINDOW + 1):
        if account.totp_last_step is not None and step <= account.totp_last_step:
            continue
        if pyotp.utils.strings_equal(totp.generate_otp(step), code):
            account.totp_last_step = step
            return True
    return False
