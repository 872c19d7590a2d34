"""What staff do in the console is told in the Telegram staff room too (when one is configured).

The room acknowledges the actions taken in it itself (bot/staff.py); an action taken in the
console would otherwise leave the room believing a thread is still free. The note uses the
room's own texts (`bot.staff.*`) and goes through the outbox's "staff" channel, in the same
unit of work as the action.
"""

from __future__ import annotations

import uuid

from sqlmodel import Session

from core.app.context import AppContext
from core.messaging import outbox
from core.messaging.outgoing import OutgoingMessage
from core.storage.models import SupportThread

__all__ = ["announce"]


def announce(ctx: AppContext, session: Session, thread: SupportThread, key: str, *, login: str,
             **params: object) -> bool:
    """Queue `bot.staff.<key>` into the staff room; False when no room is configured."""
    telegram = ctx.settings.telegram
    if telegram.staff_chat_id is None or not telegram.token:
        return False
    text = ctx.catalog.text(ctx.settings.default_language, f"bot.staff.{key}", thread=thread.id,
                            staff=f"{login} (web)", **params)
    outbox.enqueue(session, ctx.box, key=f"web-note:{thread.id}:{key}:{uuid.uuid4().hex}", channel="staff",
                   recipient=str(telegram.staff_chat_id), kind="staff-note", message=OutgoingMessage(text=text),
                   now=ctx.clock.now(), thread_id=thread.id, student_id=thread.student_id)
    return True
