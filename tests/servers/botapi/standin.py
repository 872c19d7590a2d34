"""``BotApiStandIn``: the stand-in as one object, put together from its parts.

Each part is a class of its own module over the shared ``StandInState``: serving HTTP
(server.py), chat setup (chats.py), update injection (injection.py), inspection
(inspection.py) and fault injection (faults.py). The Bot API methods themselves are in
methods/, reached through dispatch.py.
"""

from __future__ import annotations

from tests.servers.botapi.chats import ChatSetup
from tests.servers.botapi.faults import FaultInjection
from tests.servers.botapi.injection import UpdateInjection
from tests.servers.botapi.inspection import Inspection
from tests.servers.botapi.server import Serving


class BotApiStandIn(Serving, ChatSetup, UpdateInjection, Inspection, FaultInjection):
    """A Telegram Bot API server on loopback, with test-side injection and inspection.

    Switches (plain attributes, change them any time): ``check_lengths`` (400 for text over
    4096 / caption over 1024 characters), ``check_entities`` (400 for malformed
    ``parse_mode`` text), ``enforce_rate_limits`` (429 beyond ``per_chat_limit`` messages per
    ``per_chat_window`` s to one chat, ``group_limit`` per ``group_window`` s to a group, and
    ``global_limit`` per ``global_window`` s overall), ``strict_chats`` (400 "chat not found"
    for chats never seen nor added), ``default_member_status`` (getChatMember for users never
    seen in a chat), ``auto_deliver_webhook`` (when a webhook is set, injected updates are
    POSTed to it, as Telegram would), ``confirm_offsets`` (False: a getUpdates offset does not
    confirm the updates before it, so they come again).
    """
