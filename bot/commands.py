"""The command menu students see in Telegram, registered with setMyCommands in Polish and English.

Registered for private chats only (BotCommandScopeAllPrivateChats), once per language
and once without a language (the fallback Telegram shows to everyone else, in the
university's default language). Descriptions come from the catalogs (bot.commands.*), worded
for the issuing policy in force where it matters (bot.commands.renew_els).
"""

from __future__ import annotations

import logging

from telegram import Bot, BotCommand, BotCommandScopeAllPrivateChats
from telegram.error import TelegramError

from core.app.catalog import LANGUAGES, Catalog

__all__ = ["COMMANDS", "command_list", "register_commands"]

log = logging.getLogger(__name__)
COMMANDS = ("start", "request", "status", "renew", "revoke", "help", "support", "terms", "language", "cancel",
            "forget")


def _description(catalog: Catalog, language: str, name: str, policy: str) -> str:
    # `bot.commands.<name>_<policy>` where the issuing policy words it otherwise: under the
    # ELS policy /renew renews nothing, it tells how to apply again (core.conversation.engine).
    specific = f"bot.commands.{name}_{policy}"
    return catalog.text(language, specific if catalog.has(language, specific) else f"bot.commands.{name}")


def command_list(catalog: Catalog, language: str, policy: str = "standalone") -> list[BotCommand]:
    return [BotCommand(name, _description(catalog, language, name, policy)) for name in COMMANDS]


async def register_commands(bot: Bot, catalog: Catalog, default_language: str, policy: str = "standalone") -> None:
    """Best effort: a bot without its menu still works, so a failure is logged, not raised."""
    scope = BotCommandScopeAllPrivateChats()
    try:
        for language in LANGUAGES:
            await bot.set_my_commands(command_list(catalog, language, policy), scope=scope, language_code=language)
        await bot.set_my_commands(command_list(catalog, default_language, policy), scope=scope)
    except TelegramError as exc:
        log.warning("setMyCommands failed: %s", exc.message)
