"""Drives the engine for one event: loads the state, answers its storage requests, saves, commits.

One event is one unit of work: the new state, the guesses counted, the credential
created and the replies queued in the outbox commit together or not at all.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import audit, lockout, outbox, ratelimit, support, update_store
from core import credentials as credential_service
from core.compose import notice_email
from core.context import AppContext
from core.conversation import ops
from core.conversation.engine import CHAT_CODE_LENGTH, EngineConfig, step
from core.conversation.events import Event, Reply, coalesce_replies
from core.conversation.state import ConversationState
from core.conversation.status import credential_view
from core.db import lock_for_write, unit_of_work
from core.eligibility import Policy, check_eligibility, short_els_validity, validity_end
from core.errors import ConflictError, EligibilityError, RateLimitedError
from core.forget import forget_account
from core.models import LIVE_STATES, BindingCode, ChatLink, Conversation, Student, TermsAcceptance
from core.outgoing import Button, OutgoingMessage
from core.secrets_box import mask_email
from core.terms import Terms, TermsSource, load_terms

__all__ = ["ConversationService", "engine_config"]

log = logging.getLogger(__name__)
BINDING_CODE_DIGITS = "0123456789"
# Codes mailed per student and per account within one code lifetime (chat_code_ttl_minutes):
# the first and two more, for a mail that is slow or lands in spam; more only floods the inbox.
CODE_MAILS_PER_WINDOW = 3


_second_number = lockout.second_number


def engine_config(ctx: AppContext, terms: Terms | None = None) -> EngineConfig:
    """The engine's texts and rules; `terms`: the version in force (else read from config/terms for today)."""
    settings = ctx.settings
    return EngineConfig(
        catalog=ctx.catalog,
        faq=ctx.faq,  # one per context, shared with the mailbox reader and the web console
        terms=terms or load_terms(settings.config_layers("terms"), ctx.clock.today()),
        policy=settings.policy,
        pesel_hasher=ctx.box.pesel_hash,
        default_language=settings.default_language,
        chat_code_ttl_minutes=settings.limits.chat_code_ttl_minutes,
        activation_window_days=settings.credential.activation_window_days,
    )


class _Executor:
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
        handler = getattr(self, f"_{type(op).__name__}")
        return handler(op)

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
        # bound_at is what the jobs take as the time of the language choice (core.jobs.notify):
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
        renewal = credential_service.renewal_check(self.ctx, student, credential)
        replacement = credential_service.replacement_check(self.ctx, student, credential)
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
                credential = credential_service.replace_credential(
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
        check = credential_service.renewal_check(self.ctx, student, credential)
        if check.reason == credential_service.ELS_APPLY_AGAIN:
            return ops.ServiceResult(False, check.reason)
        try:
            with self.session.begin_nested():
                credential_service.renew(self.ctx, self.session, student, credential, channel=self.event.channel,
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


class ConversationService:
    """The front-ends' single entry point: `handle(event)` -> replies (also queued when asked)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        # The terms are looked up again as the service runs: a new version placed in
        # config/terms (or one whose date has come) is in force without a restart.
        self.terms = TermsSource(ctx.settings.config_layers("terms"), today=ctx.clock.today())
        self._terms_seen = self.terms.current(ctx.clock.today())
        self.config = engine_config(ctx, self._terms_seen)

    def _current_config(self) -> EngineConfig:
        """The engine's config with the terms in force now (read again only when they changed)."""
        terms = self.terms.current(self.ctx.clock.today())
        if terms is not self._terms_seen:
            self._terms_seen = terms
            self.config = dataclasses.replace(self.config, terms=terms)
        return self.config

    def handle(self, event: Event, *, queue_channel: str | None = None,
               stored_update: int | None = None) -> list[Reply]:
        """Handle one event in one unit of work.

        With `queue_channel`, the replies are also queued in the outbox (keyed by the event
        id, so a redelivered event queues nothing new) in the same commit as the state.
        `stored_update`: the row of the webhook update this event came from (core.update_store),
        marked handled in that same commit.
        """
        with unit_of_work(self.ctx.engine) as session:
            row = self._load(session, event)
            if stored_update is not None:
                update_store.mark_handled(session, stored_update, self.ctx.clock.now())
            state = ConversationState.from_json(row.state)
            if event.event_id and event.event_id in state.handled:
                return []
            executor = _Executor(self.ctx, session, event)
            flow = step(self._current_config(), state, event, self.ctx.clock.now())
            try:
                request = next(flow)
                while True:
                    request = flow.send(executor.run(request))
            except StopIteration as finished:
                replies: list[Reply] = finished.value
            state.remember(event.event_id)
            now = self.ctx.clock.now()
            if state.forgotten:
                session.execute(sa.delete(Conversation).where(
                    col(Conversation.channel) == event.channel, col(Conversation.account_id) == event.account_id))
            else:
                row.state = state.to_json()
                row.updated_at = now
                session.add(row)
            if queue_channel:
                self._queue(session, event, replies, queue_channel, state.language or "pl")
        return replies

    def _load(self, session: Session, event: Event) -> Conversation:
        query = select(Conversation).where(
            Conversation.channel == event.channel, Conversation.account_id == event.account_id)
        lock_for_write(session)  # SQLite: the write lock, as FOR UPDATE does on PostgreSQL
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()  # one event of an account at a time
        row = session.exec(query).first()
        if row is None:
            now = self.ctx.clock.now()
            row = Conversation(channel=event.channel, account_id=event.account_id, state="{}",
                               created_at=now, updated_at=now)
            session.add(row)
            session.flush()
        return row

    def _queue(self, session: Session, event: Event, replies: list[Reply], channel: str, language: str) -> None:
        # _load took the conversation's lock, so enqueue_under_lock may skip per-row SAVEPOINTs.
        event_key = event.event_id or uuid.uuid4().hex
        messages = [
            (f"reply:{channel}:{event.account_id}:{event_key}:{index}",
             OutgoingMessage(text=reply.text,
                             buttons=[[Button(b.label, b.data) for b in row] for row in reply.buttons]))
            for index, reply in enumerate(coalesce_replies(replies))
        ]
        outbox.enqueue_under_lock(session, self.ctx.box, messages, channel=channel, recipient=event.account_id,
                                  kind="chat-reply", now=self.ctx.clock.now(), language=language)

    def state_of(self, channel: str, account_id: str) -> ConversationState:
        with Session(self.ctx.engine) as session:
            row = session.exec(select(Conversation).where(
                Conversation.channel == channel, Conversation.account_id == account_id)).first()
            return ConversationState.from_json(row.state if row else None)
