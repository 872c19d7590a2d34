"""The staff room's handler: answers to escalations, /claim N, /close N, /note, /help and buttons.

A staff member answers a thread by replying to any message the bot posted about it, or
by writing in the thread's forum topic; the answer goes through core.support.answers.staff_reply,
which queues it on the channel the student used. What must not reach the student stays
in the room: a message starting with `#` is ignored by the bot, `/note ...` keeps an
internal note on the thread (`mleg threads show`), and any other /command gets the usage.
/claim of a thread a colleague holds is not done: the bot names the holder and offers
`/claim N force` (or a button) to take it over. Only members of the staff chat (creator,
administrator, member) or ids listed in MLEG_TELEGRAM__STAFF_USER_IDS may act; anyone else
is refused, and the refusal is audited. A member's status is cached briefly and forgotten
at once when Telegram reports a change (chat_member updates, join/leave service messages).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

from sqlmodel import Session, col, select
from telegram import Message, Update, User
from telegram.ext import BaseHandler, ContextTypes, MessageHandler, filters

from bot.runtime import BotRuntime
from bot.staff_room import STAFF_CHANNEL
from core.app.errors import ConflictError, NotFoundError
from core.messaging import outbox
from core.messaging.outgoing import Button, OutgoingMessage
from core.security.control_chars import strip_controls
from core.storage import audit
from core.storage.db import unit_of_work
from core.storage.models import OutboxMessage, SupportThread
from core.support import answers
from core.support import threads as support

__all__ = ["StaffRoom", "staff_handlers"]

log = logging.getLogger(__name__)
STAFF_STATUSES = ("creator", "administrator", "member")
# Anything after the command is taken as the thread number (then "force" for /claim):
# "/claim abc" gets the usage, not silence.
_COMMAND = re.compile(r"^/(claim|close)(?:@\w+)?(?:\s+(.*?))?\s*$", re.IGNORECASE | re.DOTALL)
# /note [N] text: an internal note (N needed outside the thread's topic or a reply to it).
_NOTE = re.compile(r"^/note(?:@\w+)?(?:\s+(.*?))?\s*$", re.IGNORECASE | re.DOTALL)
_NOTE_NUMBER = re.compile(r"#?(\d{1,18})\s+(\S.*)$", re.DOTALL)
_ADDRESSED = re.compile(r"^/\w+@(\w+)")
_HELP = re.compile(r"^/(help|start)(?:@\w+)?\s*$", re.IGNORECASE)
# Staff chatter the bot never passes on: "# ..." (and "/" commands it does not know).
INTERNAL_PREFIX = "#"
_THREAD_NUMBER = re.compile(r"#?(\d{1,18})")
FORCE = "force"
_BUTTON_ACTIONS = ("claim", "close", "takeover")


def staff_label(user: User) -> str:
    """How a staff member is named on the thread and in the audit trail."""
    return strip_controls(f"{user.username or user.full_name} ({user.id})")[:56]


class StaffRoom:
    def __init__(self, runtime: BotRuntime) -> None:
        self.runtime = runtime
        self.ctx = runtime.ctx
        self.chat_id = self.ctx.settings.telegram.staff_chat_id

    def t(self, key: str, **params: Any) -> str:
        return self.ctx.catalog.text(self.ctx.settings.default_language, f"bot.staff.{key}", **params)

    async def authorized(self, user: User | None) -> bool:
        if user is None or user.is_bot:
            return False
        if user.id in self.ctx.settings.telegram.staff_user_ids:
            return True
        return await self.runtime.member_status(user.id) in STAFF_STATUSES

    async def on_member_change(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A chat_member update of the staff chat: that member's cached status is stale now."""
        change = update.chat_member
        if change is None or self.chat_id is None or change.chat.id != self.chat_id:
            return
        self.runtime.forget_member(change.new_chat_member.user.id)

    def _membership_changed(self, message: Message) -> bool:
        """A join/leave service message: forget the members it names (Telegram sends these even
        when the bot is no administrator, which chat_member updates need)."""
        changed = [*(message.new_chat_members or ()), *([message.left_chat_member] if message.left_chat_member
                                                       else [])]
        for user in changed:
            self.runtime.forget_member(user.id)
        return bool(changed)

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or self._membership_changed(message) or message.text is None:
            return
        text = message.text.strip()
        if text.startswith(INTERNAL_PREFIX):
            return  # said among staff, on purpose never to a student
        if text.startswith("/") and not _COMMAND.match(text):
            addressed = _ADDRESSED.match(text)
            if addressed and addressed.group(1).lower() != (context.bot.username or "").lower():
                return  # another bot's command in the room: not ours, and never the student's
            await self.other_command(update, message, text)
            return
        command = _COMMAND.match(text)
        arguments = (command.group(2) or "").split() if command else []
        force = (command is not None and command.group(1).lower() == "claim"
                 and [word.lower() for word in arguments[-1:]] == [FORCE])
        if force:
            arguments = arguments[:-1]
        if arguments:
            number = _THREAD_NUMBER.fullmatch(" ".join(arguments))
            thread_id = int(number.group(1)) if number else None
        else:
            thread_id = await asyncio.to_thread(self.thread_of, message)
        if command is None and thread_id is None:
            return  # staff talking among themselves
        user = update.effective_user
        if not await self.authorized(user):
            await self.refuse(update, user, thread_id, "command" if command else "reply")
            return
        assert user is not None
        if command is not None:
            if thread_id is None:
                await self.ack(update, None, self.t("usage"))
                return
            await self.act(update, command.group(1).lower(), thread_id, user, force=force)
            return
        assert thread_id is not None
        await self.answer(update, thread_id, strip_controls(message.text), user)

    async def other_command(self, update: Update, message: Message, text: str) -> None:
        """/note, /help, and any other /command: never an answer to the student."""
        user = update.effective_user
        note, wants_help = _NOTE.match(text), _HELP.match(text)
        thread_id = await asyncio.to_thread(self.thread_of, message)
        if not await self.authorized(user):
            await self.refuse(update, user, thread_id, "note" if note else "command")
            return
        assert user is not None
        if wants_help:
            await self.ack(update, None, self.t("help"))
            return
        if note is None:
            await self.ack(update, None, self.t("usage"))
            return
        body = (note.group(1) or "").strip()
        numbered = _NOTE_NUMBER.match(body)
        if thread_id is None and numbered is not None:
            thread_id, body = int(numbered.group(1)), numbered.group(2).strip()
        if thread_id is None or not body:
            await self.ack(update, None, self.t("note_usage"))
            return
        noted_thread = thread_id
        await self._run(update, noted_thread,
                        lambda session: support.add_note(self.ctx, session, noted_thread, text=body,
                                                         staff=staff_label(user)),
                        self.t("noted", thread=noted_thread))

    async def on_callback(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        parts = (query.data or "").split(":")
        if len(parts) != 3 or parts[0] != "staff" or parts[1] not in _BUTTON_ACTIONS or not parts[2].isdigit():
            await query.answer()
            return
        thread_id = int(parts[2])
        if not await self.authorized(query.from_user):
            await query.answer(self.t("refused"), show_alert=True)
            await self.refuse(update, query.from_user, thread_id, f"button:{parts[1]}", post=False)
            return
        await query.answer()
        if parts[1] == "takeover":
            await self.act(update, "claim", thread_id, query.from_user, force=True)
        else:
            await self.act(update, parts[1], thread_id, query.from_user)

    # --- actions ----------------------------------------------------------------------------
    async def act(self, update: Update, action: str, thread_id: int, user: User, *, force: bool = False) -> None:
        staff = staff_label(user)
        if action == "close":
            await self._run(update, thread_id,
                            lambda session: support.close_thread(self.ctx, session, thread_id, staff=staff),
                            self.t("closed", thread=thread_id, staff=user.full_name))
            return

        def claim(session: Session) -> str | None:
            """The claim; returns whom it was taken over from (None: nobody, or oneself)."""
            before = support.get_thread(session, thread_id).claimed_by
            support.claim_thread(self.ctx, session, thread_id, staff=staff, force=force)
            return before if before not in (None, staff) else None

        def done(previous: str | None) -> str:
            if previous is None:
                return self.t("claimed", thread=thread_id, staff=user.full_name)
            return self.t("taken_over", thread=thread_id, staff=user.full_name, holder=previous)

        await self._run(update, thread_id, claim, done)

    async def answer(self, update: Update, thread_id: int, text: str, user: User) -> None:
        def reply(session: Session) -> str:
            answers.staff_reply(self.ctx, session, thread_id, text=text, staff=staff_label(user))
            return support.get_thread(session, thread_id).channel

        channel = await self._run(update, thread_id, reply, self.t("answered", thread=thread_id))
        if isinstance(channel, str):
            self.ctx.outbox_changed(channel)

    async def _run(self, update: Update, thread_id: int, work: Callable[[Session], Any],
                   done: str | Callable[[Any], str]) -> Any:
        """The action and its acknowledgement in one commit, keyed by the update: a redelivered
        update (after a crash), or the same update polled by a second server, does nothing.
        `done` is the acknowledgement, or makes it from what `work` returned.

        The acknowledgement's row is inserted first and the action runs only if that insert
        took the key: checking for it and then acting would let two servers both act (on
        PostgreSQL the second insert waits for the first transaction, then finds the key)."""
        key = f"staff-ack:{update.update_id}"

        def unit() -> tuple[bool, Any]:
            with unit_of_work(self.ctx.engine) as session:
                ack = outbox.reserve(session, key=key, channel=STAFF_CHANNEL, recipient=str(self.chat_id),
                                     kind="staff-ack", now=self.ctx.clock.now(), thread_id=thread_id)
                if ack is None:
                    return False, None
                result = work(session)
                text = done if isinstance(done, str) else done(result)
                outbox.set_body(self.ctx.box, ack, OutgoingMessage(text=text))
                session.add(ack)
                return True, result

        try:
            fresh, result = await asyncio.to_thread(unit)
        except NotFoundError:
            await self.ack(update, None, self.t("not_found", thread=thread_id))
            return None
        except support.ThreadClaimed as exc:
            # Asked, not done: the holder may be halfway through an answer.
            take_over = Button(self.t("take_over", thread=thread_id), f"staff:takeover:{thread_id}")
            await self.ack(update, thread_id, self.t("held_by", thread=thread_id, holder=exc.holder),
                           buttons=[[take_over]])
            return None
        except ConflictError:
            await self.ack(update, thread_id, self.t("closed_already", thread=thread_id))
            return None
        self.ctx.outbox_changed(STAFF_CHANNEL)
        return result if fresh else None

    async def refuse(self, update: Update, user: User | None, thread_id: int | None, what: str,
                     *, post: bool = True) -> None:
        def record() -> None:
            with unit_of_work(self.ctx.engine) as session:
                audit.record(session, at=self.ctx.clock.now(), actor=f"telegram:{user.id if user else '?'}",
                             action="staff.refused", thread_id=thread_id, attempted=what)

        await asyncio.to_thread(record)
        log.warning("staff room: user %s refused (%s)", user.id if user else "?", what)
        if post:
            await self.ack(update, None, self.t("refused"))

    # --- lookups and acknowledgements --------------------------------------------------------
    def thread_of(self, message: Message) -> int | None:
        """The thread a staff message is about: by the bot message it replies to, or by its topic."""
        with Session(self.ctx.engine) as session:
            original = message.reply_to_message
            if original is not None:
                row = session.exec(select(OutboxMessage).where(
                    OutboxMessage.channel == STAFF_CHANNEL,
                    OutboxMessage.external_id == f"{message.chat_id}:{original.message_id}",
                )).first()
                if row is not None and row.thread_id is not None:
                    return row.thread_id
                thread = session.exec(select(SupportThread).where(
                    SupportThread.staff_message_ref == str(original.message_id))).first()
                if thread is not None:
                    return thread.id
            if message.is_topic_message and message.message_thread_id is not None:
                thread = session.exec(select(SupportThread).where(
                    col(SupportThread.staff_topic_id) == message.message_thread_id)).first()
                if thread is not None:
                    return thread.id
        return None

    def _enqueue_ack(self, session: Session, key: str, thread_id: int | None, text: str,
                     buttons: list[list[Button]] | None = None) -> None:
        outbox.enqueue(session, self.ctx.box, key=key, channel=STAFF_CHANNEL, recipient=str(self.chat_id),
                       kind="staff-ack", message=OutgoingMessage(text=text, buttons=buttons or []),
                       now=self.ctx.clock.now(), thread_id=thread_id)

    async def ack(self, update: Update, thread_id: int | None, text: str,
                  buttons: list[list[Button]] | None = None) -> None:
        """A short note into the staff room (in the thread's topic when there is one), via the outbox."""
        def unit() -> None:
            with unit_of_work(self.ctx.engine) as session:
                self._enqueue_ack(session, f"staff-ack:{update.update_id}", thread_id, text, buttons)

        await asyncio.to_thread(unit)
        self.ctx.outbox_changed(STAFF_CHANNEL)


def staff_handlers(runtime: BotRuntime) -> tuple[StaffRoom, list[BaseHandler]]:  # type: ignore[type-arg]
    room = StaffRoom(runtime)
    if room.chat_id is None:
        return room, []
    return room, [MessageHandler(filters.Chat(room.chat_id) & ~filters.UpdateType.EDITED, room.on_message)]
