"""Answers the engine's storage requests (core.conversation.ops) inside one event's session:
guessing limits, the code that binds a chat, the student's overview and credential, support, forgetting.

Each request has its method, listed in OP_HANDLERS: a request without one fails a test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.app.errors import ConflictError, EligibilityError, RateLimitedError
from core.conversation import ops
from core.conversation.engine import CHAT_CODE_LENGTH
from core.conversation.events import Event
from core.conversation.status import credential_view
from core.credentials import renewal as renewal_service
from core.credentials import service as credential_service
from core.credentials.compose import notice_email
from core.messaging import outbox
from core.security import lockout, ratelimit
from core.security.forget import forget_account
from core.security.secrets_box import mask_email
from core.storage import audit
from core.storage.models import LIVE_STATES, BindingCode, ChatLink, Student, TermsAcceptance
from core.students.eligibility import Policy, check_eligibility, short_els_validity, validity_end
from core.support import threads as support

__all__ = ["OP_HANDLERS", "Executor"]

BINDING_CODE_DIGITS = "0123456789"
# Codes mailed per student and per account within one code lifetime (chat_code_ttl_minutes):
# the first and two more, for a mail that is slow or lands in spam; more only floods the inbox.
CODE_MAILS_PER_WINDOW = 3

_second_number = lockout.second_number


class Executor:
    """Answers the engine's requests inside the event's session."""

    def __init__(self, ctx: AppContext, session: Session, event: Event) -> None:
        self.ctx = ctx
        self.session = session
        self.event = event
        self.account_scope = ("account", f"{event.channel}:{event.account_id}")
        # What IdentifyKeys saw this turn: the typed number (by, number) and the typed PESEL's student.
        self._typed: tuple[str, str] | None = None
        self._pesel_owner: Student | None = None

    def run(self, op: ops.Op) -> Any:
        return OP_HANDLERS[type(op)](self, op)

    # --- guessing limits ---------------------------------------------------------------------
    def _scopes(self, *student_keys: str | None) -> list[tuple[str, str]]:
        keys = dict.fromkeys(key for key in student_keys if key)  # once each, in order
        return [self.account_scope] + [("student", key) for key in keys]

    def _limits(self, op: ops.CheckLocked | ops.RecordWrongGuess) -> dict[tuple[str, str], int]:
        # The album (or ELS) number's own limit, higher than an account's: anyone may know it.
        album = self.ctx.settings.limits.album_limit
        return {("student", key): album for key in op.also} if op.kind == "identify" else {}

    def _locked_until(self, kind: str, scopes: list[tuple[str, str]],
                      limits: dict[tuple[str, str], int] | None = None) -> Any:
        settings = self.ctx.settings.limits
        try:
            ratelimit.check_allowed(
                self.session, kind, scopes, now=self.ctx.clock.now(),
                limit=settings.guesses_per_hour, window=timedelta(minutes=settings.guess_window_minutes),
                limits=limits,
            )
        except RateLimitedError as locked:
            return locked.until
        return None

    def _CheckLocked(self, op: ops.CheckLocked) -> Any:
        return self._locked_until(op.kind, self._scopes(op.student_key, *op.also), self._limits(op))

    def _RecordWrongGuess(self, op: ops.RecordWrongGuess) -> Any:
        scopes = self._scopes(op.student_key, *op.also)
        now = self.ctx.clock.now()
        ratelimit.record_failure(self.session, op.kind, scopes, now=now)
        audit.record(self.session, at=now, actor=f"{self.event.channel}:{self.event.account_id}",
                     action=f"guess.wrong.{op.kind}")
        if op.kind == "identify":
            self._tell_locked_students(scopes, self._limits(op))
        return self._locked_until(op.kind, scopes, self._limits(op))

    def _tell_locked_students(self, scopes: list[tuple[str, str]], limits: dict[tuple[str, str], int]) -> None:
        """The students whose identification this guess has just locked hear of it at their register address.

        A scope can be at its limit only through this guess: the check before it refused otherwise.
        """
        settings = self.ctx.settings.limits
        now = self.ctx.clock.now()
        locked = ratelimit.locked_scopes(
            self.session, "identify", [scope for scope in scopes if scope[0] == "student"], now=now,
            limit=settings.guesses_per_hour, window=timedelta(minutes=settings.guess_window_minutes), limits=limits)
        if not locked:
            return
        by, typed = self._typed or ("album", "")
        owner = self._pesel_owner
        owner_keys: set[str | None] = set()
        if owner is not None:  # the typed PESEL's student: its PESEL's count and its own number's
            owner_keys = {owner.pesel_hash, self._number_key(by, owner.els_number if by == "els" else owner.album)}
        typed_key = self._number_key(by, typed)
        students: dict[int, tuple[Student, Any]] = {}
        for scope, until in locked.items():
            student = owner if scope[1] in owner_keys else None
            if student is None and scope[1] == typed_key:  # the typed number's student, if anyone's
                student = lockout.student_by_number(self.session, by, typed)
            if student is not None and student.id is not None:
                previous = students.get(student.id)
                students[student.id] = (student, until if previous is None else max(previous[1], until))
        for student, until in students.values():
            lockout.notify_locked(self.ctx, self.session, student, until, now=now)

    def _number_key(self, by: str, number: str | None) -> str | None:
        # Keyed, as the PESEL's: the table of counts holds no album or ELS number in clear.
        return lockout.number_key(self.ctx.box, by, number)

    def _IdentifyKeys(self, op: ops.IdentifyKeys) -> tuple[str, ...]:
        # The typed number's key whether or not anyone holds it: a key only for numbers in the
        # register would lock only those, and the lock would tell which albums exist.
        keys = [self._number_key(op.by, op.second)]
        student = self.session.exec(select(Student).where(Student.pesel_hash == op.pesel_hash)).first()
        self._typed, self._pesel_owner = (op.by, op.second), student
        if student is not None:
            keys.append(self._number_key(op.by, student.els_number if op.by == "els" else student.album))
        return tuple(dict.fromkeys(key for key in keys if key))

    # --- codes mailed ------------------------------------------------------------------------
    def _code_mail_scopes(self, student_id: int) -> list[tuple[str, str]]:
        return self._scopes(f"student:{student_id}")

    def _CheckResend(self, op: ops.CheckResend) -> Any:
        try:
            ratelimit.check_allowed(
                self.session, "code_mail", self._code_mail_scopes(op.student_id), now=self.ctx.clock.now(),
                limit=CODE_MAILS_PER_WINDOW,
                window=timedelta(minutes=self.ctx.settings.limits.chat_code_ttl_minutes),
            )
        except RateLimitedError as locked:
            return locked.until
        return None

    # --- identification ----------------------------------------------------------------------
    def _MatchStudent(self, op: ops.MatchStudent) -> int | None:
        student = self.session.exec(select(Student).where(Student.pesel_hash == op.pesel_hash)).first()
        if student is None:
            return None
        # Typed by hand off the card: "ELS-99892850", "els 99892850" and "99892850" are one number.
        known = _second_number(op.by, (student.els_number if op.by == "els" else student.album) or "")
        return student.id if known and known == _second_number(op.by, op.second) else None

    def _SendBindingCode(self, op: ops.SendBindingCode) -> str:
        now = self.ctx.clock.now()
        student = self.session.get(Student, op.student_id)
        assert student is not None
        for old in self.session.exec(select(BindingCode).where(
            BindingCode.channel == self.event.channel, BindingCode.account_id == self.event.account_id,
            col(BindingCode.used_at).is_(None),
        )).all():
            old.used_at = now  # only the newest code works
            self.session.add(old)
        code = self.ctx.random.string(BINDING_CODE_DIGITS, CHAT_CODE_LENGTH)
        ttl = timedelta(minutes=self.ctx.settings.limits.chat_code_ttl_minutes)
        row = BindingCode(channel=self.event.channel, account_id=self.event.account_id, student_id=student.id or 0,
                          code_hash=self.ctx.box.keyed_hash("binding-code", code), created_at=now,
                          expires_at=now + ttl)
        self.session.add(row)
        self.session.flush()
        # Counted here, not at the button: every code mailed (the first one too) fills the inbox.
        # Kept with the guesses, which /forget does not delete, so forgetting resets nothing.
        ratelimit.record(self.session, "code_mail", self._code_mail_scopes(student.id or 0), now=now)
        message = notice_email(
            self.ctx.catalog, "email.binding", language=op.language, first_name=student.first_name, code=code,
            minutes=self.ctx.settings.limits.chat_code_ttl_minutes, university=self.ctx.settings.university.name,
            contact=self.ctx.contact,
        )
        # Not the row id alone: retention deletes used codes and SQLite then hands the same id
        # out again, and an outbox key seen before is silently not queued (the code never went).
        key = f"binding:{row.id}:{uuid.uuid4().hex}"
        outbox.enqueue(self.session, self.ctx.box, key=key, channel="email",
                       recipient=student.email, kind="binding-code", message=message, now=now,
                       language=op.language, student_id=student.id)
        return mask_email(student.email)

    def _MaskedEmail(self, op: ops.MaskedEmail) -> str:
        student = self.session.get(Student, op.student_id)
        return mask_email(student.email) if student is not None else ""

    def _VerifyBindingCode(self, op: ops.VerifyBindingCode) -> tuple[str, int | None]:
        now = self.ctx.clock.now()
        row = self.session.exec(
            select(BindingCode).where(
                BindingCode.channel == self.event.channel, BindingCode.account_id == self.event.account_id,
                col(BindingCode.used_at).is_(None),
            ).order_by(sa.desc(col(BindingCode.id)))
        ).first()
        if row is None:
            return "none", None
        if now > row.expires_at:
            return "expired", row.student_id
        code = "".join(ch for ch in op.code if ch.isdigit())
        if not self.ctx.box.verify("binding-code", code, row.code_hash):
            return "wrong", row.student_id
        row.used_at = now
        self.session.add(row)
        return "ok", row.student_id

    def _BindAccount(self, op: ops.BindAccount) -> None:
        now = self.ctx.clock.now()
        link = self.session.exec(select(ChatLink).where(
            ChatLink.channel == self.event.channel, ChatLink.account_id == self.event.account_id)).first()
        if link is None:
            link = ChatLink(channel=self.event.channel, account_id=self.event.account_id, student_id=op.student_id,
                            language=op.language, bound_at=now)
        link.student_id, link.language, link.bound_at, link.blocked_at = op.student_id, op.language, now, None
        self.session.add(link)
        for acceptance in self.session.exec(select(TermsAcceptance).where(
            TermsAcceptance.channel == self.event.channel, TermsAcceptance.account_id == self.event.account_id,
            col(TermsAcceptance.student_id).is_(None),
        )).all():
            acceptance.student_id = op.student_id
            self.session.add(acceptance)
        audit.record(self.session, at=now, actor=f"{self.event.channel}:{self.event.account_id}",
                     action="chat.bound", student_id=op.student_id)

    def _SetLanguage(self, op: ops.SetLanguage) -> None:
        link = self.session.exec(select(ChatLink).where(
            ChatLink.channel == self.event.channel, ChatLink.account_id == self.event.account_id)).first()
        if link is None:  # unlinked meanwhile (the student left the register): nothing to keep
            return
        # bound_at is what the jobs take as the time of the language choice (core.messaging.notify):
        # the newest choice, on whichever of the student's accounts, is the one they want.
        link.language, link.bound_at = op.language, self.ctx.clock.now()
        self.session.add(link)

    def _AcceptTerms(self, op: ops.AcceptTerms) -> None:
        self.session.add(TermsAcceptance(channel=self.event.channel, account_id=self.event.account_id,
                                         student_id=op.student_id, version=op.version,
                                         accepted_at=self.ctx.clock.now()))

    # --- the student's credential ------------------------------------------------------------
    def _expire_overdue(self, student_id: int) -> None:
        # Between two nightly sweeps a turn may be the first to meet dead activation data.
        credential_service.expire_overdue_activation(self.ctx, self.session, student_id)

    def _StudentOverview(self, op: ops.StudentOverview) -> ops.Overview | None:
        student = self.session.get(Student, op.student_id)
        if student is None:
            return None
        policy, today = Policy(self.ctx.settings.policy), self.ctx.clock.today()
        self._expire_overdue(op.student_id)
        eligibility = check_eligibility(student, policy, today)
        credential = credential_service.latest_credential(self.session, op.student_id)
        renewal = renewal_service.renewal_check(self.ctx, student, credential)
        replacement = renewal_service.replacement_check(self.ctx, student, credential)
        now = self.ctx.clock.now()
        short_activation_until = replacement_activation_until = None
        if eligibility.ok:
            window = credential_service.activation_window(self.ctx, validity_end(student, policy, today), now)
            if window < self.ctx.activation_window:
                short_activation_until = now + window
        if replacement.possible and replacement.new_valid_until is not None:
            window = credential_service.activation_window(self.ctx, replacement.new_valid_until, now)
            if window < self.ctx.activation_window:
                replacement_activation_until = now + window
        return ops.Overview(
            first_name=student.first_name, masked_email=mask_email(student.email),
            ineligible=tuple(str(r) for r in eligibility.reasons), credential=credential_view(credential, student),
            renewal_possible=renewal.possible, renewal_reason=renewal.reason, renewal_until=renewal.new_valid_until,
            renewal_opens_on=renewal.opens_on,
            short_validity_until=short_els_validity(student, policy, today) if eligibility.ok else None,
            short_activation_until=short_activation_until,
            replacement_possible=replacement.possible, replacement_reason=replacement.reason,
            replacement_until=replacement.new_valid_until, replacement_opens_on=replacement.opens_on,
            replacement_activation_until=replacement_activation_until,
            els_valid_until=student.els_valid_until if policy is Policy.ELS else None,
        )

    def _actor(self) -> str:
        return f"student:{self.event.channel}"

    def _RequestCredential(self, op: ops.RequestCredential) -> ops.ServiceResult:
        student = self.session.get(Student, op.student_id)
        assert student is not None
        self._expire_overdue(op.student_id)
        if op.replace:
            return self._replace(student, op)
        try:
            with self.session.begin_nested():
                credential = credential_service.request_credential(
                    self.ctx, self.session, student, channel=self.event.channel, actor=self._actor(),
                    language=op.language)
        except EligibilityError as refused:
            return ops.ServiceResult(False, "not_eligible", tuple(str(r) for r in refused.reasons))
        except ConflictError:
            return ops.ServiceResult(False, "already")
        return ops.ServiceResult(True, credential=credential_view(credential))

    def _replace(self, student: Student, op: ops.RequestCredential) -> ops.ServiceResult:
        """A new application replacing the active credential (ELS policy), as the student confirmed it."""
        current = credential_service.live_credential(self.session, op.student_id)
        if current is None:
            return ops.ServiceResult(False, "replace_failed")
        try:
            with self.session.begin_nested():
                credential = renewal_service.replace_credential(
                    self.ctx, self.session, student, current, channel=self.event.channel, actor=self._actor(),
                    language=op.language)
        except ConflictError:
            # Nothing revoked: the savepoint took the whole replacement back.
            return ops.ServiceResult(False, "replace_failed")
        return ops.ServiceResult(True, credential=credential_view(credential))

    def _RenewCredential(self, op: ops.RenewCredential) -> ops.ServiceResult:
        self._expire_overdue(op.student_id)
        student = self.session.get(Student, op.student_id)
        credential = credential_service.live_credential(self.session, op.student_id)
        if student is None or credential is None:
            return ops.ServiceResult(False, "no_credential")
        check = renewal_service.renewal_check(self.ctx, student, credential)
        if check.reason == renewal_service.ELS_APPLY_AGAIN:
            return ops.ServiceResult(False, check.reason)
        try:
            with self.session.begin_nested():
                renewal_service.renew(self.ctx, self.session, student, credential, channel=self.event.channel,
                                         actor=self._actor(), language=op.language)
        except ConflictError:
            return ops.ServiceResult(False, "renew_failed")
        return ops.ServiceResult(True, credential=credential_view(credential))

    def _RevokeCredential(self, op: ops.RevokeCredential) -> ops.ServiceResult:
        self._expire_overdue(op.student_id)
        credential = credential_service.live_credential(self.session, op.student_id)
        if credential is None or credential.state not in LIVE_STATES:
            return ops.ServiceResult(False, "no_credential")
        credential_service.revoke(self.ctx, self.session, credential, reason=op.reason, actor=self._actor(),
                                  language=op.language)
        return ops.ServiceResult(True, credential=credential_view(credential))

    # --- support and forgetting ----------------------------------------------------------------
    def _OpenSupportThread(self, op: ops.OpenSupportThread) -> int:
        thread = support.open_thread(
            self.ctx, self.session, student_id=op.student_id, channel=self.event.channel,
            account_id=self.event.account_id, text=op.text, language=op.language,
            subject=op.text.split("\n", 1)[0][:80],
        )
        return thread.id or 0

    def _ForgetAccount(self, op: ops.ForgetAccount) -> None:
        # Wrong guesses stay: forgetting must not reset the guessing limits.
        forget_account(self.session, channel=self.event.channel, account_id=self.event.account_id,
                       now=self.ctx.clock.now())


# The method that answers each request the engine yields (core.conversation.ops.Op): explicit, so a
# request without one fails a test (tests/test_conversation_ops.py) instead of a student's turn.
OP_HANDLERS: dict[type, Callable[[Executor, Any], Any]] = {
    ops.CheckLocked: Executor._CheckLocked,
    ops.RecordWrongGuess: Executor._RecordWrongGuess,
    ops.IdentifyKeys: Executor._IdentifyKeys,
    ops.CheckResend: Executor._CheckResend,
    ops.MatchStudent: Executor._MatchStudent,
    ops.SendBindingCode: Executor._SendBindingCode,
    ops.MaskedEmail: Executor._MaskedEmail,
    ops.VerifyBindingCode: Executor._VerifyBindingCode,
    ops.BindAccount: Executor._BindAccount,
    ops.SetLanguage: Executor._SetLanguage,
    ops.AcceptTerms: Executor._AcceptTerms,
    ops.StudentOverview: Executor._StudentOverview,
    ops.RequestCredential: Executor._RequestCredential,
    ops.RenewCredential: Executor._RenewCredential,
    ops.RevokeCredential: Executor._RevokeCredential,
    ops.OpenSupportThread: Executor._OpenSupportThread,
    ops.ForgetAccount: Executor._ForgetAccount,
}
