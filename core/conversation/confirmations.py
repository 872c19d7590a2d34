"""The questions the bound menu waits a yes or no to, as a table: for each step, what its yes
does, the buttons it is asked with, and the words asking it again.

A yes button's data names what it confirms (`confirm:yes:<what>`): an old "Confirm" under an
application, pressed while a revocation is asked, must not revoke. /forget's question is not
here: it works in every step, bound or not (core.conversation.leaving).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.conversation.actions.apply import do_replace, do_request
from core.conversation.actions.renewal import do_renew
from core.conversation.actions.revocation import do_revoke
from core.conversation.actions.support import do_support
from core.conversation.state import Step
from core.conversation.turn import CONFIRM_YES, Buttons, Flow, Turn

__all__ = ["CONFIRMATIONS", "NO_BUTTON", "Confirmation"]

NO_BUTTON = "confirm:no"


@dataclass(frozen=True)
class Confirmation:
    """One confirmation: `what` its yes button names, the flow a yes runs, the labels of its yes
    and no buttons (under `button.`), and the text that asks again, naming what waits."""

    what: str
    action: Callable[[Turn], Flow]
    yes: str
    no: str
    again: str
    # The draft of a question for staff: "a person, please" is a yes, and any other intent typed
    # is what the student meant instead (the draft is dropped). Elsewhere another question is
    # answered and the confirmation asked again.
    draft: bool = False

    @property
    def yes_data(self) -> str:
        return f"{CONFIRM_YES}{self.what}"

    @property
    def buttons(self) -> Buttons:
        return [[(self.yes, self.yes_data), (self.no, NO_BUTTON)]]


CONFIRMATIONS: dict[Step, Confirmation] = {
    Step.CONFIRM_REQUEST: Confirmation("request", do_request, "confirm", "cancel", "confirm.again_request"),
    Step.CONFIRM_REPLACE: Confirmation("replace", do_replace, "confirm", "cancel", "confirm.again_replace"),
    Step.CONFIRM_RENEW: Confirmation("renew", do_renew, "confirm", "cancel", "confirm.again_renew"),
    Step.CONFIRM_REVOKE: Confirmation("revoke", do_revoke, "revoke_yes", "cancel", "confirm.again_revoke"),
    Step.CONFIRM_SUPPORT: Confirmation("support", do_support, "send_to_staff", "no", "confirm.again_support",
                                       draft=True),
}
