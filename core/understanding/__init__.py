"""One understanding of students' text for the chat and the mailbox: text -> intent, confidence,
language and slots, trained at start-up from the catalog of phrasings in `config/intents.toml`."""

from core.understanding.catalog import ACTION_INTENTS, INTENTS, IntentCatalog, Topic
from core.understanding.model import Understanding, Understood, load_understanding
from core.understanding.text import fold

__all__ = ["ACTION_INTENTS", "INTENTS", "IntentCatalog", "Topic", "Understanding", "Understood", "fold",
           "load_understanding"]
