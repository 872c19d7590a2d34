"""The Telegram front-end: updates -> engine events, engine replies and outbox rows -> Telegram.

No business rule lives here. The front-end (bot.frontend) and the outbox senders
(bot.channel, bot.staff_room) share one python-telegram-bot Application (bot.runtime).
"""

__all__: list[str] = []
