"""The local Telegram Bot API stand-in, as a package (see ``state`` until it is split)."""

from tests.servers.botapi.state import (
    DEFAULT_TOKEN,
    ApiCall,
    BotApiStandIn,
    SentMessage,
    UploadedFile,
    check_html,
    check_markdown,
    check_markdown_v2,
    post_update_to_webhook,
)

__all__ = [
    "DEFAULT_TOKEN",
    "ApiCall",
    "BotApiStandIn",
    "SentMessage",
    "UploadedFile",
    "check_html",
    "check_markdown",
    "check_markdown_v2",
    "post_update_to_webhook",
]
