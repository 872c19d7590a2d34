"""The tables (SQLModel). PESEL is only ever stored as a keyed hash and a masked form.

Times are stored as UTC instants (`UTCDateTime`); calendar dates (validity ends, removal
dates) are plain dates in Europe/Warsaw, the zone the rules are written in.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

__all__ = [
    "LIVE_STATES",
    "Application",
    "AuditEvent",
    "BindingCode",
    "ChatLink",
    "Conversation",
    "Credential",
    "CredentialEvent",
    "CredentialState",
    "GuessAttempt",
    "InboundMail",
    "InboundMailRaw",
    "JobRun",
    "MailboxState",
    "OutboxMessage",
    "OutboxStatus",
    "ReminderLog",
    "ServiceHealth",
    "StaffAccount",
    "StaffSession",
    "StoredUpdate",
    "Student",
    "StudentStatus",
    "StudyLevel",
    "SupportMessage",
    "SupportThread",
    "TermsAcceptance",
    "ThreadStatus",
    "WebhookState",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on SQLite and PostgreSQL alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _ts(nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index),
    )


class StudyLevel(StrEnum):
    FIRST_CYCLE = "first_cycle"
    SECOND_CYCLE = "second_cycle"
    LONG_CYCLE = "long_cycle"
    DOCTORAL = "doctoral"
    POSTGRADUATE = "postgraduate"


class StudentStatus(StrEnum):
    ACTIVE = "active"
    REMOVED = "removed"
    GRADUATED = "graduated"
    SUSPENDED = "suspended"


class CredentialState(StrEnum):
    REQUESTED = "requested"
    PENDING_ACTIVATION = "pending_activation"
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


LIVE_STATES = (
    CredentialState.REQUESTED,
    CredentialState.PENDING_ACTIVATION,
    CredentialState.ACTIVE,
)


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"  # permanent: shown to staff, not retried
    # Taken back before it went out: what it carried died first (the credential ended, its
    # activation data was resent, the register address changed). Kept, not a failure.
    CANCELLED = "cancelled"


class ThreadStatus(StrEnum):
    OPEN = "open"
    ESCALATED = "escalated"
    CLAIMED = "claimed"
    ANSWERED = "answered"
    CLOSED = "closed"


class Student(SQLModel, table=True):
    """A row of the student register (rejestr studentów), as imported."""

    id: int | None = Field(default=None, primary_key=True)
    album: str = Field(max_length=32, unique=True, index=True)
    pesel_hash: str | None = Field(default=None, max_length=64, unique=True, index=True)
    pesel_masked: str | None = Field(default=None, max_length=16)
    first_name: str = Field(max_length=120)
    last_name: str = Field(max_length=120)
    email: str = Field(max_length=254, index=True)
    study_level: str = Field(max_length=20)
    status: str = Field(max_length=20, index=True)
    els_number: str | None = Field(default=None, max_length=40, index=True)
    els_valid_until: date | None = None
    removed_on: date | None = None
    row_digest: str = Field(max_length=64)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class TermsAcceptance(SQLModel, table=True):
    """Acceptance of a version of the service terms (regulamin) by a chat account."""

    __tablename__ = "terms_acceptance"
    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)
    account_id: str = Field(max_length=64)
    student_id: int | None = Field(default=None, foreign_key="student.id", index=True)
    version: str = Field(max_length=32)
    accepted_at: datetime = _ts()

    __table_args__ = (sa.Index("ix_terms_acceptance_account", "channel", "account_id"),)


class ChatLink(SQLModel, table=True):
    """A chat account bound to a student after the e-mailed one-time code."""

    __tablename__ = "chat_link"
    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)
    account_id: str = Field(max_length=64)
    student_id: int = Field(foreign_key="student.id", index=True)
    language: str = Field(default="pl", max_length=2)
    bound_at: datetime = _ts()
    blocked_at: datetime | None = _ts(nullable=True)

    __table_args__ = (sa.UniqueConstraint("channel", "account_id", name="uq_chat_link_account"),)


class Conversation(SQLModel, table=True):
    """The persisted state of one chat account's conversation with the engine."""

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)
    account_id: str = Field(max_length=64)
    state: str = Field(default="{}", sa_column=sa.Column(sa.Text, nullable=False))
    created_at: datetime = _ts()
    updated_at: datetime = _ts(index=True)

    __table_args__ = (sa.UniqueConstraint("channel", "account_id", name="uq_conversation_account"),)


class GuessAttempt(SQLModel, table=True):
    """A wrong guess (PESEL/ELS, chat code, activation code), counted per account and per student."""

    __tablename__ = "guess_attempt"
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    scope: str = Field(max_length=16)
    key: str = Field(max_length=64)
    at: datetime = _ts()

    __table_args__ = (sa.Index("ix_guess_attempt_lookup", "kind", "scope", "key", "at"),)


class BindingCode(SQLModel, table=True):
    """The one-time code e-mailed to bind a chat account to a student (hash only)."""

    __tablename__ = "binding_code"
    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)
    account_id: str = Field(max_length=64, index=True)
    student_id: int = Field(foreign_key="student.id")
    code_hash: str = Field(max_length=64)
    created_at: datetime = _ts()
    expires_at: datetime = _ts()
    used_at: datetime | None = _ts(nullable=True)


class Application(SQLModel, table=True):
    """An application (wniosek): a new credential or a renewal for the next semester."""

    id: int | None = Field(default=None, primary_key=True)
    student_id: int = Field(foreign_key="student.id", index=True)
    kind: str = Field(max_length=16)
    channel: str = Field(max_length=16)
    credential_id: int | None = Field(default=None, foreign_key="credential.id")
    created_at: datetime = _ts()


class Credential(SQLModel, table=True):
    """A mobile student ID (mLegitymacja studencka) and where it is in its lifecycle."""

    id: int | None = Field(default=None, primary_key=True)
    public_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex, max_length=32, unique=True, index=True
    )
    student_id: int = Field(foreign_key="student.id", index=True)
    state: str = Field(max_length=24)
    policy: str = Field(max_length=16)
    valid_until: date
    activation_deadline: datetime | None = _ts(nullable=True)
    code_hash: str | None = Field(default=None, max_length=64)
    qr_token_hash: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    issued_at: datetime | None = _ts(nullable=True)
    activated_at: datetime | None = _ts(nullable=True)
    ended_at: datetime | None = _ts(nullable=True)
    end_reason: str | None = Field(default=None, max_length=32)
    renewed_at: datetime | None = _ts(nullable=True)

    __table_args__ = (
        sa.Index("ix_credential_state_valid_until", "state", "valid_until"),
        sa.Index("ix_credential_state_deadline", "state", "activation_deadline"),
        # One live credential per student, enforced by the database, not only by the code.
        sa.Index(
            "uq_credential_one_live_per_student",
            "student_id",
            unique=True,
            sqlite_where=sa.text("state IN ('requested', 'pending_activation', 'active')"),
            postgresql_where=sa.text("state IN ('requested', 'pending_activation', 'active')"),
        ),
    )


class CredentialEvent(SQLModel, table=True):
    """One move of a credential's lifecycle: from, to, who, why, when."""

    __tablename__ = "credential_event"
    id: int | None = Field(default=None, primary_key=True)
    credential_id: int = Field(foreign_key="credential.id", index=True)
    from_state: str | None = Field(default=None, max_length=24)
    to_state: str = Field(max_length=24)
    actor: str = Field(max_length=64)
    reason: str = Field(max_length=64)
    at: datetime = _ts()


class AuditEvent(SQLModel, table=True):
    """The audit trail: who did what, when, to which student/credential/thread. No PII in detail."""

    __tablename__ = "audit_event"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(index=True)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=64, index=True)
    student_id: int | None = Field(default=None, index=True)
    credential_id: int | None = Field(default=None, index=True)
    thread_id: int | None = Field(default=None)
    detail: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, default=""))


class OutboxMessage(SQLModel, table=True):
    """A message decided but maybe not yet sent; the body is encrypted and wiped once sent."""

    __tablename__ = "outbox"
    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=128, unique=True)
    channel: str = Field(max_length=16)
    recipient: str = Field(max_length=254)
    kind: str = Field(max_length=32)
    language: str = Field(default="pl", max_length=2)
    body: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary, nullable=True))
    status: str = Field(default=OutboxStatus.PENDING, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = _ts()
    lease_until: datetime | None = _ts(nullable=True)
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    external_id: str | None = Field(default=None, max_length=255)
    student_id: int | None = Field(default=None, index=True)
    credential_id: int | None = Field(default=None, index=True)
    thread_id: int | None = Field(default=None, index=True)
    created_at: datetime = _ts()
    sent_at: datetime | None = _ts(nullable=True)

    __table_args__ = (
        sa.Index("ix_outbox_due", "status", "channel", "next_attempt_at"),
        # The mailbox's per-sender daily cap on automatic answers counts by recipient and day.
        sa.Index("ix_outbox_recipient_created", "recipient", "created_at"),
        # ... and with its `+tag` and upper-case variants (core.support.mailbox_rules). Made by
        # migration 0007, on PostgreSQL in the "C" collation (which reflection does not report).
        sa.Index("ix_outbox_recipient_key", sa.text("lower(recipient)"), "created_at"),
        # The daily caps that count an address's `+tag` variants too (automatic answers) and the
        # staff room's escalations per sender and domain: one channel's last day, not the table.
        sa.Index("ix_outbox_channel_created", "channel", "created_at"),
    )


class ReminderLog(SQLModel, table=True):
    """One row per reminder sent: the unique key makes "once per credential and kind" a fact."""

    __tablename__ = "reminder_log"
    id: int | None = Field(default=None, primary_key=True)
    credential_id: int = Field(foreign_key="credential.id")
    kind: str = Field(max_length=48)
    created_at: datetime = _ts()

    __table_args__ = (sa.UniqueConstraint("credential_id", "kind", name="uq_reminder_once"),)


class JobRun(SQLModel, table=True):
    """The job ledger: each run of each lifecycle job and what it did."""

    __tablename__ = "job_run"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, index=True)
    started_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)
    ok: bool = True
    detail: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, default=""))


class SupportThread(SQLModel, table=True):
    """A support conversation (zgłoszenie) from chat or e-mail, escalated to staff when needed."""

    __tablename__ = "support_thread"
    id: int | None = Field(default=None, primary_key=True)
    student_id: int | None = Field(default=None, foreign_key="student.id", index=True)
    channel: str = Field(max_length=16)
    account_id: str = Field(max_length=254)
    subject: str = Field(default="", max_length=255)
    language: str = Field(default="pl", max_length=2)
    status: str = Field(default=ThreadStatus.OPEN, max_length=16, index=True)
    claimed_by: str | None = Field(default=None, max_length=64)
    staff_message_ref: str | None = Field(default=None, max_length=64)
    staff_topic_id: int | None = None
    last_email_message_id: str | None = Field(default=None, max_length=255)
    created_at: datetime = _ts()
    updated_at: datetime = _ts(index=True)
    closed_at: datetime | None = _ts(nullable=True)
    # E-mail only (None elsewhere): whether the receiving server proved the From address
    # (core.support.mail_sender). An unproven thread is one a stranger may have opened in a student's name.
    sender_verified: bool | None = None
    # Why its escalation was kept from the staff room (a per-sender or per-domain cap), or None.
    escalation_held: str | None = Field(default=None, max_length=120)


class SupportMessage(SQLModel, table=True):
    """One message in a support thread: from the student, an automatic answer, or staff."""

    __tablename__ = "support_message"
    id: int | None = Field(default=None, primary_key=True)
    thread_id: int = Field(foreign_key="support_thread.id", index=True)
    direction: str = Field(max_length=8)
    author: str = Field(max_length=254)
    body: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    email_message_id: str | None = Field(default=None, max_length=255, index=True)
    created_at: datetime = _ts()
    # An inbound e-mail's (None for other messages): was its From address proven (core.support.mail_sender)?
    sender_verified: bool | None = None


class InboundMail(SQLModel, table=True):
    """A raw support e-mail, stored before any processing so nothing is lost."""

    __tablename__ = "inbound_mail"
    id: int | None = Field(default=None, primary_key=True)
    mailbox: str = Field(max_length=255)
    uidvalidity: int
    uid: int
    message_id: str | None = Field(default=None, max_length=255, index=True)
    digest: str = Field(max_length=64, unique=True)
    size: int
    status: str = Field(default="new", max_length=16, index=True)
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    thread_id: int | None = Field(default=None, index=True)
    received_at: datetime = _ts()
    processed_at: datetime | None = _ts(nullable=True)


class InboundMailRaw(SQLModel, table=True):
    """The bytes of an InboundMail, apart from the row that lists it: up to 25 MB each.

    A table of its own, with the blob its last column, because SQLite writes a zero-filled
    blob in place (and core.storage.blobs then fills it piece by piece) only when it ends the row.
    """

    __tablename__ = "inbound_mail_raw"
    inbound_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("inbound_mail.id", ondelete="CASCADE"),
                                                primary_key=True, autoincrement=False))
    raw: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


class MailboxState(SQLModel, table=True):
    """Where the IMAP reader stopped: UIDVALIDITY and the last UID stored."""

    __tablename__ = "mailbox_state"
    mailbox: str = Field(primary_key=True, max_length=255)
    uidvalidity: int
    last_uid: int = 0


class ServiceHealth(SQLModel, table=True):
    """The last known state of a connection a server keeps (e.g. the mailbox's login), for `mleg status`.

    Written when the state changes, so a server that works writes nothing per message.
    """

    __tablename__ = "service_health"
    name: str = Field(primary_key=True, max_length=64)
    ok: bool
    detail: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, default=""))
    checked_at: datetime = _ts()
    since: datetime = _ts()


class StoredUpdate(SQLModel, table=True):
    """An update a chat platform POSTed to our webhook, stored before it was acknowledged.

    The payload (what the student typed) is encrypted and wiped once the update is handled;
    the row stays a while longer so a retry of the same update_id is recognised (core.storage.update_store).
    """

    __tablename__ = "stored_update"
    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)
    update_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    payload: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary, nullable=True))
    received_at: datetime = _ts()
    handled_at: datetime | None = _ts(nullable=True)

    __table_args__ = (
        sa.UniqueConstraint("channel", "update_id", name="uq_stored_update"),
        sa.Index("ix_stored_update_waiting", "channel", "handled_at", "update_id"),
    )


class WebhookState(SQLModel, table=True):
    """A channel's webhook health as the servers last saw it, for `mleg status`."""

    __tablename__ = "webhook_state"
    channel: str = Field(primary_key=True, max_length=16)
    url: str = Field(default="", max_length=512)
    set_at: datetime | None = _ts(nullable=True)
    set_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    last_received_at: datetime | None = _ts(nullable=True)
    info_checked_at: datetime | None = _ts(nullable=True)
    info_pending: int | None = None
    info_error_at: datetime | None = _ts(nullable=True)
    info_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))


class StaffAccount(SQLModel, table=True):
    """A help-desk account of the web console (`mleg staff`): argon2 password hash, TOTP secret encrypted."""

    __tablename__ = "staff_account"
    id: int | None = Field(default=None, primary_key=True)
    login: str = Field(max_length=64, unique=True, index=True)
    role: str = Field(default="agent", max_length=16)
    password_hash: str = Field(max_length=255)
    # The TOTP secret, encrypted with the installation's secret (core.security.secrets_box); None: not enrolled.
    totp_secret: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary, nullable=True))
    # The last TOTP time step accepted: a code seen once is never taken again.
    totp_last_step: int | None = None
    created_at: datetime = _ts()
    disabled_at: datetime | None = _ts(nullable=True)
    last_sign_in_at: datetime | None = _ts(nullable=True)


class StaffSession(SQLModel, table=True):
    """A signed-in web console session; the cookie carries a random token, the table its keyed hash."""

    __tablename__ = "staff_session"
    token_hash: str = Field(primary_key=True, max_length=64)
    staff_id: int = Field(foreign_key="staff_account.id", index=True)
    csrf_token: str = Field(max_length=64)
    address: str = Field(default="", max_length=64)
    created_at: datetime = _ts()
    last_seen_at: datetime = _ts()
