"""Conversations follow a student to a new student record (a PESEL moved to a new album).

The conversation's stored state is the conversation package's own format, so the register asks
here rather than rewriting it: each conversation of the given chat accounts that is bound to the
old student is bound to the new one, under the same row lock a chat turn takes on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.conversation.state import ConversationState
from core.storage.models import ChatLink, Conversation

__all__ = ["rebind_conversations"]


def rebind_conversations(session: Session, links: Sequence[ChatLink], old_student_id: int, new_student_id: int,
                         *, now: datetime) -> int:
    """Bind the conversations of `links` that are bound to `old_student_id` to `new_student_id`;
    returns how many."""
    if not links:
        return 0
    query = select(Conversation).where(sa.or_(*(
        sa.and_(col(Conversation.channel) == link.channel, col(Conversation.account_id) == link.account_id)
        for link in links
    )))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()  # as the chat's own turn locks it (core.conversation.runner)
    moved = 0
    for conversation in session.exec(query).all():
        state = ConversationState.from_json(conversation.state)
        if state.student_id != old_student_id:
            continue
        state.student_id = new_student_id
        conversation.state, conversation.updated_at = state.to_json(), now
        session.add(conversation)
        moved += 1
    return moved
