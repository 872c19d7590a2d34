"""The conversation engine: the student's whole journey as a pure state machine.

`step(config, state, event, now)` is a generator: it yields storage requests
(`core.conversation.ops`) and is sent their answers, and finally returns the replies.
It does no I/O and reads no clock of its own, so Telegram, the console, e-mail and
tests all drive the same journey:

    new ─▶ language ─▶ terms ─accept─▶ pesel ─▶ second_id ─▶ code ─▶ menu
                         │ decline                                   │
                         ▼                                           ├─ confirm_request
                      declined (help only)                           ├─ confirm_renew (stand-alone policy)
                                                                     ├─ confirm_replace (ELS policy)
                                                                     ├─ revoke_reason ─▶ confirm_revoke
                                                                     ├─ help_steps
                                                                     ├─ support_text / confirm_support
                                                                     └─ confirm_forget

This module is the engine's public face; the journey's parts live beside it:

- `dispatch`: `step()`, and the routing of an event (what works in every step, then by step);
- `turn`: the configuration, the turn being handled, and the words every step shares;
- `onboarding`: greeting, language, terms; `identification`: PESEL, ELS or album number, code;
- `menu`: the bound menu; `confirmations`: the table of its yes/no questions; `intents`: what
  typed intents lead to;
- `overview`: the status and the menu's buttons; `actions/`: apply, renew, revoke, ask staff;
- `prompts`: what each step asks; `leaving`: cancel and forget; `faq_answers`: the FAQ in any step.
"""

from __future__ import annotations

from core.conversation.dispatch import step
from core.conversation.identification import CHAT_CODE_LENGTH
from core.conversation.turn import EngineConfig, Flow

__all__ = ["CHAT_CODE_LENGTH", "EngineConfig", "Flow", "step"]
