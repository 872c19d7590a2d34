"""Where a student reaches us, said in every e-mail: the bot's chat link and the help desk's address.

An e-mail that says "apply in the chat with the university's bot" must say where that chat
is: `https://t.me/<username>` from MLEG_TELEGRAM__BOT_USERNAME. Without a username the
e-mail words the chat without a link (`email.where.bot_chat_no_link`, in
config/messages/*/contact.toml) rather than show an empty one. The help desk's address
(MLEG_UNIVERSITY__HELP_DESK_EMAIL) is always known.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.app.catalog import Catalog
from core.app.settings import Settings

__all__ = ["Contact"]


@dataclass(frozen=True)
class Contact:
    help_desk: str
    bot_link: str = ""  # https://t.me/<username>; empty when the username is not configured

    @classmethod
    def of(cls, settings: Settings) -> Contact:
        username = settings.telegram.bot_username
        return cls(help_desk=settings.university.help_desk_email,
                   bot_link=f"https://t.me/{username}" if username else "")

    def params(self, catalog: Catalog, language: str) -> dict[str, str]:
        """The placeholders every e-mail may use: `{bot_chat}` ("w czacie z botem uczelni (link)"),
        `{bot_link}` and `{help_desk}`, in `language`."""
        key = "email.where.bot_chat" if self.bot_link else "email.where.bot_chat_no_link"
        return {
            "bot_chat": catalog.text(language, key, bot_link=self.bot_link),
            "bot_link": self.bot_link,
            "help_desk": self.help_desk,
        }
