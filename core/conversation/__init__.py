"""The conversation engine (pure) and the service that runs it against storage."""

from core.conversation.events import Event, Reply, ReplyButton
from core.conversation.runner import ConversationService
from core.conversation.state import ConversationState

__all__ = ["ConversationService", "ConversationState", "Event", "Reply", "ReplyButton"]
