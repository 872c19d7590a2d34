"""`mleg credentials`: list, show, revoke, resend activation data (and activate, standing in for mObywatel)."""

from __future__ import annotations

import getpass
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from sqlmodel import Session, col, select

from core.app.errors import ConflictError, NotFoundError
from core.cli.common import build_context, emit_json, friendly_errors, print_table
from core.credentials import service
from core.credentials.compose import format_datetime
from core.credentials.lifecycle import EndReason
from core.storage.db import unit_of_work
from core.storage.models import Credential, CredentialEvent, CredentialState, Student

app = typer.Typer(help="Mobile student IDs (mLegitymacje) and their lifecycle.", no_args_is_help=True)


class StaffRevokeReason(StrEnum):
    """The end reasons staff may give by hand; the rest (validity ended, ...) are the jobs' own."""

    LOST_PHONE = EndReason.LOST_PHONE.value
    NEW_PHONE = EndReason.NEW_PHONE.value
    STUDENT_REQUEST = EndReason.STUDENT_REQUEST.value
    GRADUATION = EndReason.GRADUATION.value
    REMOVAL = EndReason.REMOVAL.value
    STAFF = EndReason.STAFF.value



def _effective(credential: Credential, student: Student | None) -> tuple[date, datetime | None]:
    """The credential's real end and activation deadline: a removal from the student list brings
    both forward (one month after it), as the chat and the e-mail answers tell the student."""
    if student is None:
        return credential.valid_until, credential.activation_deadline
    return (service.effective_valid_until(student, credential),
            service.effective_activation_deadline(student, credential))


def _public(credential: Credential, student: Student | None) -> dict[str, Any]:
    ends, deadline = _effective(credential, student)
    return {
        "id": credential.id,
        "public_id": credential.public_id,
        "state": credential.state,
        "policy": credential.policy,
        "valid_until": credential.valid_until,
        # valid_until is the credential's own (semester or ELS) end; these are what is in force.
        "effective_valid_until": ends,
        "activation_deadline": credential.activation_deadline,
        "effective_activation_deadline": deadline,
        "created_at": credential.created_at,
        "activated_at": credential.activated_at,
        "ended_at": credential.ended_at,
        "end_reason": credential.end_reason,
        "student": None if student is None else {
            "album": student.album,
            "name": f"{student.first_name} {student.last_name}",
            "email": student.email,
            "pesel": student.pesel_masked,
            "status": student.status,
        },
    }


@app.command("list")
@friendly_errors
def list_command(
    state: Annotated[CredentialState | None, typer.Option(help="Only this state.")] = None,
    album: Annotated[str | None, typer.Option(help="Only this student (album number).")] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many, newest first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List credentials, newest first."""
    ctx = build_context()
    with Session(ctx.engine) as session:
        query = select(Credential, Student).join(Student, col(Student.id) == Credential.student_id)
        if state:
            query = query.where(Credential.state == state.value)
        if album:
            query = query.where(Student.album == album)
        query = query.order_by(sa.desc(col(Credential.id))).limit(limit)
        rows = session.exec(query).all()
    if as_json:
        emit_json([_public(c, s) for c, s in rows])
        return
    print_table(
        ["id", "album", "student", "state", "valid_until", "activation_deadline"],
        [_row(c, s) for c, s in rows],
    )


def _row(credential: Credential, student: Student) -> tuple[Any, ...]:
    """A table row: the ends in force; one a removal brought forward is marked, with the credential's own."""
    ends, deadline = _effective(credential, student)
    valid_until = (str(ends) if ends == credential.valid_until
                   else f"{ends} (removed; own {credential.valid_until})")
    return (credential.id, student.album, f"{student.first_name} {student.last_name}", credential.state, valid_until,
            deadline.date() if deadline else "")


@app.command("show")
@friendly_errors
def show_command(
    ref: Annotated[str, typer.Argument(help="Credential id or public id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One credential with its student (PESEL masked) and every lifecycle move."""
    ctx = build_context()
    with Session(ctx.engine) as session:
        credential = service.find_credential(session, ref)
        student = session.get(Student, credential.student_id)
        events = session.exec(
            select(CredentialEvent)
            .where(CredentialEvent.credential_id == credential.id)
            .order_by(col(CredentialEvent.id))
        ).all()
    data = _public(credential, student)
    data["events"] = [
        {"at": e.at, "from": e.from_state, "to": e.to_state, "actor": e.actor, "reason": e.reason}
        for e in events
    ]
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        if key not in ("events", "student"):
            typer.echo(f"{key:20} {'' if value is None else value}")
    if data["student"]:
        for key, value in data["student"].items():
            typer.echo(f"student.{key:12} {value}")
    typer.echo("history:")
    for event in data["events"]:
        typer.echo(
            f"  {event['at']:%Y-%m-%d %H:%M} {event['from'] or '-'} -> {event['to']} "
            f"by {event['actor']} ({event['reason']})"
        )


@app.command("revoke")
@friendly_errors
def revoke_command(
    ref: Annotated[str, typer.Argument(help="Credential id or public id.")],
    reason: Annotated[StaffRevokeReason, typer.Option(
        help="Why: " + ", ".join(r.value for r in StaffRevokeReason) + ".")] = StaffRevokeReason.STAFF,
    by: Annotated[str | None, typer.Option(help="Who does this (for the audit trail).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Revoke (unieważnij) a credential; the student is told by e-mail."""
    end_reason = EndReason(reason.value)
    ctx = build_context()
    actor = f"staff:{by or getpass.getuser()}"
    if not yes:
        typer.confirm(f"Revoke credential {ref} ({end_reason})?", abort=True)
    with unit_of_work(ctx.engine) as session:
        credential = service.find_credential(session, ref)
        _refuse_ended(credential)
        service.revoke(ctx, session, credential, reason=end_reason, actor=actor)
    typer.echo(f"credential {credential.id} revoked ({end_reason})")


def _refuse_ended(credential: Credential) -> None:
    """An ended credential has nothing left to revoke: say so in words, not as a state move."""
    if credential.state == CredentialState.REVOKED:
        raise ConflictError(f"credential {credential.id} is already revoked ({credential.end_reason})")
    if credential.state == CredentialState.EXPIRED:
        raise ConflictError(
            f"credential {credential.id} has already expired ({credential.end_reason}): nothing to revoke")


@app.command("resend")
@friendly_errors
def resend_command(
    album: Annotated[str, typer.Argument(help="The student's album number.")],
    by: Annotated[str | None, typer.Option(help="Who does this (for the audit trail).")] = None,
) -> None:
    """Resend the activation data of the student's credential waiting for activation.

    New activation data (the earlier code stops working), e-mailed only to the register
    address; the activation deadline stays. A few times a day per credential at most.
    """
    ctx = build_context()
    actor = f"staff:{by or getpass.getuser()}"
    with unit_of_work(ctx.engine) as session:
        student = session.exec(select(Student).where(Student.album == album.strip())).first()
        if student is None:
            raise NotFoundError(f"no student with album {album!r}")
        credential = service.live_credential(session, student.id or 0)
        if credential is None or credential.state != CredentialState.PENDING_ACTIVATION:
            raise ConflictError(f"student {album} has no credential waiting for activation")
        deadline = service.resend_activation(ctx, session, credential, actor=actor)
    typer.echo(f"credential {credential.id}: new activation data sent to the register address "
               f"(activate by {format_datetime(deadline)}, as before)")


@app.command("activate")
@friendly_errors
def activate_command(
    ref: Annotated[str, typer.Argument(help="Credential id or public id.")],
    code: Annotated[str, typer.Option(prompt=True, hide_input=True, help="The activation code.")],
) -> None:
    """Stand-in for mObywatel (local issuer only): redeem an activation code.

    Wrong codes count against the student's guess limit.
    """
    ctx = build_context()
    with unit_of_work(ctx.engine) as session:
        credential = service.find_credential(session, ref)
        service.activate(ctx, session, credential, code, actor="mobywatel-standin")
    typer.echo(f"credential {credential.id} is active until {credential.valid_until}")
