"""A question for the help desk from the chat: the text asked for, kept redacted as a draft until
confirmed, and the support thread opened with it."""

from __future__ import annotations

from core.conversation import ops
from core.conversation.overview import menu
from core.conversation.state import Step
from core.conversation.turn import Flow, Steps, Turn
from core.security.redact import redact_personal

__all__ = ["do_support", "support_text"]


def support_text(turn: Turn) -> Steps:
    if turn.event.kind != "text":
        turn.say("support.ask")
        return
    turn.state.support_draft = redact_personal(turn.text)
    replies = yield from do_support(turn)
    turn.replies.extend(replies)


def do_support(turn: Turn) -> Flow:
    draft = turn.state.support_draft
    turn.state.support_draft = None
    turn.state.step = Step.MENU
    if not draft:
        turn.say("support.ask")
        turn.state.step = Step.SUPPORT_TEXT
        return []
    thread_id = yield ops.OpenSupportThread(turn.state.student_id, draft, turn.lang)
    if turn.truncated:
        turn.say("support.truncated", limit=turn.config.max_text)
    turn.say("support.opened", thread=thread_id)
    yield from menu(turn)  # not a dead end: what the student can do next
    return []
