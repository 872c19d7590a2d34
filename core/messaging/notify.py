"""Where a job's message goes: the student's chat if one is linked, else the register e-mail address."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.credentials.compose import notice_email
from core.messaging import outbox
from core.messaging.outgoing import Button, OutgoingMessage
from core.storage.models import ChatLink, Credential, Student

__all__ = ["chat_links", "email_language", "email_languages", "queue_chat", "queue_email"]

CHAT_CHANNEL = "telegram"


def _newest_links(session: Session, student_ids: Iterable[int], *conditions: Any) -> dict[int, ChatLink]:
    """Each student's most recently bound link among those matching `conditions`, in one query."""
    ids = sorted(set(student_ids))
    if not ids:
        return {}
    links = session.exec(
        select(ChatLink).where(col(ChatLink.student_id).in_(ids), *conditions)
        .order_by(col(ChatLink.bound_at), col(ChatLink.id))
    ).all()
    return {link.student_id: link for link in links}  # later rows win: the newest link


def chat_links(session: Session, student_ids: Iterable[int]) -> dict[int, ChatLink]:
    """The newest usable (not blocked) chat link of each student, in one query for a whole batch."""
    return _newest_links(session, student_ids, ChatLink.channel == CHAT_CHANNEL, col(ChatLink.blocked_at).is_(None))


def email_languages(session: Session, student_ids: Iterable[int]) -> dict[int, str]:
    """The language each student chose in a chat, for e-mail: their most recently updated link.

    Any channel, blocked or not: a student who chose English on the console, or blocked the
    bot afterwards, still reads English. A link's language is set when it is bound, so its
    bound_at is when the choice was last updated (blocking changes no language).
    """
    return {student_id: link.language for student_id, link in _newest_links(session, student_ids).items()}


def email_language(ctx: AppContext, languages: dict[int, str], student_id: int | None) -> str:
    return languages.get(student_id or 0) or ctx.settings.default_language


def queue_email(
    ctx: AppContext,
    session: Session,
    *,
    key: str,
    catalog_key: str,
    kind: str,
    student: Student,
    credential: Credential,
    language: str,
    params: dict[str, Any],
) -> None:
    """A notice in both languages to the register address (never an address typed anywhere else)."""
    message = notice_email(
        ctx.catalog, catalog_key, language=language, first_name=student.first_name, contact=ctx.contact,
        university=ctx.settings.university.name, **params,
    )
    outbox.enqueue(
        session, ctx.box, key=key, channel="email", recipient=student.email, kind=kind,
        message=message, now=ctx.clock.now(), language=language,
        student_id=student.id, credential_id=credential.id,
    )


def queue_chat(
    ctx: AppContext,
    session: Session,
    *,
    key: str,
    catalog_key: str,
    kind: str,
    link: ChatLink,
    credential: Credential,
    params: dict[str, Any],
    buttons: Sequence[tuple[str, str]] = (),
) -> None:
    """A chat message in the language the student chose for the chat, with buttons (catalog key, data)."""
    language = link.language
    text = ctx.catalog.text(language, f"{catalog_key}.chat", university=ctx.settings.university.name, **params)
    message = OutgoingMessage(
        text=text,
        buttons=[[Button(ctx.catalog.text(language, label), data)] for label, data in buttons],
    )
    outbox.enqueue(
        session, ctx.box, key=key, channel=link.channel, recipient=link.account_id, kind=kind,
        message=message, now=ctx.clock.now(), language=language,
        student_id=link.student_id, credential_id=credential.id,
    )
