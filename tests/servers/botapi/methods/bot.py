"""The bot's own settings: getMe, its command lists, and the setters it only needs answered."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from tests.servers.botapi.errors import ApiError
from tests.servers.botapi.state import StandInState
from tests.servers.botapi.wire import Files, Params

# Settings the bot may make that no test reads back: answered True, recorded as calls only.
_TRUE_ONLY_METHODS = frozenset(
    {
        "setMyDescription",
        "setMyShortDescription",
        "setMyName",
        "setChatMenuButton",
        "setMyDefaultAdministratorRights",
    }
)


def commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
    """Where a command list is kept: (scope as canonical JSON, language code); no scope is "default"."""
    if not scope:
        scope = {"type": "default"}
    return json.dumps(scope, sort_keys=True), str(language_code or "")


def _api_getMe(s: StandInState, p: Params, f: Files, token: str) -> Any:
    return {
        **s.bot_user(token),
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


def _api_setMyCommands(s: StandInState, p: Params, f: Files, token: str) -> Any:
    commands = p.get("commands")
    if not isinstance(commands, list):
        raise ApiError(400, 'Bad Request: parameter "commands" is required')
    if len(commands) > 100:
        raise ApiError(400, "Bad Request: too many commands specified")
    for command in commands:
        if not isinstance(command, dict) or not re.fullmatch(
            r"[a-z0-9_]{1,32}", str(command.get("command", ""))
        ):
            raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        if not 1 <= len(str(command.get("description", ""))) <= 256:
            raise ApiError(400, "Bad Request: command description is empty")
    with s._cond:
        key = commands_key(p.get("scope"), p.get("language_code"))
        s._commands[key] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
    return True


def _api_getMyCommands(s: StandInState, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        return list(s._commands.get(commands_key(p.get("scope"), p.get("language_code")), []))


def _api_deleteMyCommands(s: StandInState, p: Params, f: Files, token: str) -> Any:
    with s._cond:
        s._commands.pop(commands_key(p.get("scope"), p.get("language_code")), None)
    return True


def _api_close(s: StandInState, p: Params, f: Files, token: str) -> Any:
    return True


def _api_logOut(s: StandInState, p: Params, f: Files, token: str) -> Any:
    return True


def _true_only(name: str) -> Callable[..., Any]:
    # named like the other handlers, since the dispatcher records a call under the handler's name
    def handler(s: StandInState, p: Params, f: Files, token: str) -> Any:
        return True

    handler.__name__ = f"_api_{name}"
    return handler


METHODS = (
    _api_getMe,
    _api_setMyCommands,
    _api_getMyCommands,
    _api_deleteMyCommands,
    _api_close,
    _api_logOut,
    *(_true_only(name) for name in sorted(_TRUE_ONLY_METHODS)),
)
