"""A local Telegram Bot API stand-in: a loopback HTTP server python-telegram-bot can talk to.

It speaks the Bot API methods the bot uses (getMe, getUpdates with long polling, webhooks,
commands, sendMessage, sendPhoto, edits, callback answers, chat/member lookups, forum
topics, ...) in Telegram's exact response shapes, checks Telegram's limits (message length,
``parse_mode`` entities, flood limits) and lets a test inject updates and inspect every
outgoing call. It is a real listening TCP server (``ThreadingHTTPServer`` in a background
thread), so a bot in another process (``mleg serve``) can be pointed at it too::

    api = BotApiStandIn().start()
    app = (ApplicationBuilder().token(api.token).base_url(api.base_url)
           .base_file_url(api.base_file_url).build())
    api.push_text(chat_id=42, user_id=42, text="hello")
    api.wait_for_messages(42, 1)          # or: await api.await_messages(42, 1)
    api.stop()

All test-side methods are thread-safe. Blocking waits (``wait_for_*``) must not be called
from the event loop the bot runs in; use the ``await_*`` twins there.

Where things are: ``standin.py`` puts ``BotApiStandIn`` together; ``state.py`` holds what
"Telegram" knows; ``server.py`` serves HTTP and ``dispatch.py`` routes a request to one of
``methods/``; ``wire.py`` reads request parameters; ``text.py``, ``html_entities.py`` and
``markdown.py`` check texts; ``flood.py`` is flood control; ``chats.py``, ``injection.py``,
``inspection.py`` and ``faults.py`` are what a test calls.
"""

from tests.servers.botapi.html_entities import check_html
from tests.servers.botapi.markdown import check_markdown_v2
from tests.servers.botapi.methods.webhook import post_update_to_webhook
from tests.servers.botapi.records import ApiCall, SentMessage, UploadedFile
from tests.servers.botapi.standin import BotApiStandIn
from tests.servers.botapi.state import DEFAULT_TOKEN

__all__ = [
    "DEFAULT_TOKEN",
    "ApiCall",
    "BotApiStandIn",
    "SentMessage",
    "UploadedFile",
    "check_html",
    "check_markdown_v2",
    "post_update_to_webhook",
]
