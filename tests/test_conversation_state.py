"""The stored conversation state: its steps are `Step` members, and a state stored before they were
(plain strings in JSON) reads back and is written again byte for byte the same: no migration."""

from __future__ import annotations

import json

from core.conversation.state import ConversationState, Step

# As the chat stored it before the steps were an enum (generated data, no real PESEL hash).
STORED = ('{"language": "pl", "step": "confirm_revoke", "terms_version": "2025-10-01", "student_id": 7, '
          '"pesel_hash": null, "pending_student_id": null, "resume_menu": false, "revoke_reason": "lost_phone", '
          '"support_draft": "Zgubiłem telefon", "help_step": 0, "forgotten": false, "handled": ["u:1", "u:2"]}')


def test_a_state_stored_before_the_enum_reads_back_and_is_written_the_same() -> None:
    state = ConversationState.from_json(STORED)
    assert state.step is Step.CONFIRM_REVOKE
    assert state.to_json() == STORED


def test_every_step_is_stored_as_its_old_string_and_reads_back_as_itself() -> None:
    for step in Step:
        stored = ConversationState(step=step).to_json()
        assert json.loads(stored)["step"] == step.value
        assert f'"step": "{step.value}"' in stored
        assert ConversationState.from_json(stored).step is step


def test_the_steps_are_the_seventeen_the_journey_has_always_stored() -> None:
    assert {step.value for step in Step} == {
        "new", "language", "terms", "declined", "pesel", "second_id", "code", "menu", "confirm_request",
        "confirm_replace", "confirm_renew", "revoke_reason", "confirm_revoke", "help_steps", "support_text",
        "confirm_support", "confirm_forget",
    }


def test_an_empty_or_stepless_state_is_new_and_an_unknown_step_is_the_menu() -> None:
    assert ConversationState.from_json(None).step is Step.NEW
    assert ConversationState.from_json("{}").step is Step.NEW
    # A step no version knows: the engine took it as the menu (bound) or asked the data again (unbound).
    assert ConversationState.from_json('{"step": "confirm_renewal_v0"}').step is Step.MENU
