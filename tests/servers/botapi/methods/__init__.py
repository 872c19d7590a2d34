"""The Bot API methods the stand-in speaks, one module a family, and the table that finds them.

Each method is a function ``_api_<exact Telegram name>(state, params, files, token)`` that
returns the ``result`` of Telegram's answer or raises ``ApiError``; each module lists its own
in ``METHODS``. Method names are matched without regard to case, as Telegram does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.servers.botapi.methods import bot, chats, files, messages, polling, webhook
from tests.servers.botapi.state import StandInState
from tests.servers.botapi.wire import Files, Params

Handler = Callable[[StandInState, Params, Files, str], Any]

HANDLERS: dict[str, Handler] = {
    fn.__name__.removeprefix("_api_").lower(): fn
    for module in (bot, polling, webhook, messages, files, chats)
    for fn in module.METHODS
}
