"""A student in the register and a chat bound to them through the conversation, and what it leaves."""

from __future__ import annotations

from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.storage.db import unit_of_work
from core.storage.models import ChatLink, Credential, Student
from tests.chat_driver import ChatDriver
from tests.factories import add_student


def new_student(ctx: AppContext, **overrides: object) -> tuple[Student, str]:
    """A committed student with its clear (generated) PESEL."""
    with unit_of_work(ctx.engine) as session:
        return add_student(session, ctx.box, **overrides)


def bound_chat(ctx: AppContext, language: str = "pl", *, channel: str = "console",
               student: tuple[Student, str] | None = None, **overrides: object) -> tuple[ChatDriver, Student]:
    """A chat that identified itself as `student` (a new one made of `overrides` when None): PESEL, then
    the album, or the ELS number under the ELS policy, then the chat code."""
    row, pesel = student if student is not None else new_student(ctx, **overrides)
    chat = ChatDriver(ctx, channel=channel)
    second = str(overrides.get("els_number", row.album)) if ctx.settings.policy == "els" else row.album
    chat.identify(pesel, second, language)
    return chat, row


def apply_in_chat(chat: ChatDriver) -> None:
    """The menu's application, confirmed."""
    chat.press("menu:request")
    chat.press("confirm:yes:request")


def all_credentials(ctx: AppContext) -> list[Credential]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(Credential).order_by(col(Credential.id))).all())


def chat_links(ctx: AppContext) -> list[ChatLink]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(ChatLink)).all())
