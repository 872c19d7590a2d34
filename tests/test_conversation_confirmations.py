"""The bound menu's confirmations are one table (core.conversation.confirmations): each action asks
its question with the table's buttons, the question asked again names the same ones, and only its
own yes button (or a typed yes) runs its action. The engine alone, storage answered from a script."""

from __future__ import annotations

from collections.abc import Generator
from datetime import UTC, date, datetime
from typing import Any

import pytest

from core.app.catalog import Catalog
from core.app.settings import PROJECT_ROOT
from core.conversation import ConversationState, Event, Reply, ops
from core.conversation.confirmations import CONFIRMATIONS
from core.conversation.engine import EngineConfig, step
from core.conversation.state import Step
from core.conversation.terms import load_terms
from core.students.eligibility import Policy
from core.support.faq import Faq

NOW = datetime(2026, 10, 5, 9, 30, tzinfo=UTC)
CONFIG_DIR = PROJECT_ROOT / "config"
_CATALOG = Catalog.load(CONFIG_DIR / "messages")
_FAQ = Faq.load(CONFIG_DIR / "faq")
_TERMS = load_terms(CONFIG_DIR / "terms")


def _config(policy: Policy) -> EngineConfig:
    return EngineConfig(catalog=_CATALOG, faq=_FAQ, terms=_TERMS, policy=policy, pesel_hasher=lambda p: "h:" + p)


def _credential(state: str) -> ops.CredentialView:
    return ops.CredentialView("pub-1", state, date(2027, 3, 31), None, None)


# What the student's overview says, so that each action may be asked for.
OVERVIEWS = {
    "none": ops.Overview("Ala", "a***@uni.example", (), None, False, "no_credential", None),
    "active_renewable": ops.Overview("Ala", "a***@uni.example", (), _credential("active"), True, "ok",
                                     date(2027, 9, 30)),
    "active_replaceable": ops.Overview("Ala", "a***@uni.example", (), _credential("active"), False, "els_apply_again",
                                       None, replacement_possible=True, replacement_reason="ok",
                                       replacement_until=date(2027, 9, 30)),
}


class Storage:
    """Scripted answers: the overview given, every action done."""

    def __init__(self, overview: ops.Overview) -> None:
        self.overview = overview
        self.done: list[ops.Op] = []

    def answer(self, op: ops.Op) -> Any:
        if isinstance(op, ops.StudentOverview):
            return self.overview
        if isinstance(op, ops.RequestCredential | ops.RenewCredential | ops.RevokeCredential):
            self.done.append(op)
            return ops.ServiceResult(True, credential=_credential("pending_activation"))
        if isinstance(op, ops.OpenSupportThread):
            self.done.append(op)
            return 12
        return None


def _run(flow: Generator[ops.Op, Any, list[Reply]], storage: Storage) -> list[Reply]:
    try:
        request = next(flow)
        while True:
            request = flow.send(storage.answer(request))
    except StopIteration as finished:
        return list(finished.value)


def _bound_state() -> ConversationState:
    return ConversationState(language="en", step=Step.MENU, terms_version=_TERMS.version, student_id=7)


def _press(data: str) -> Event:
    return Event(kind="button", channel="t", account_id="1", text=data)


def _type(text: str) -> Event:
    return Event.text_message("t", "1", text)


# Each confirmation, the policy and overview it is asked under, and the inputs leading to it.
ROUTES = {
    Step.CONFIRM_REQUEST: (Policy.STANDALONE, "none", [_press("menu:request")]),
    Step.CONFIRM_REPLACE: (Policy.ELS, "active_replaceable", [_press("menu:request")]),
    Step.CONFIRM_RENEW: (Policy.STANDALONE, "active_renewable", [_press("menu:renew")]),
    Step.CONFIRM_REVOKE: (Policy.STANDALONE, "active_renewable", [_press("menu:revoke"), _press("revoke:lost_phone")]),
    Step.CONFIRM_SUPPORT: (Policy.STANDALONE, "none", [_type("qwrtz plmkn zzvx")]),
}


def _asked(confirmation_step: Step) -> tuple[EngineConfig, ConversationState, Storage, list[Reply]]:
    policy, overview, events = ROUTES[confirmation_step]
    config, state, storage = _config(policy), _bound_state(), Storage(OVERVIEWS[overview])
    replies: list[Reply] = []
    for event in events:
        replies = _run(step(config, state, event, NOW), storage)
    assert state.step == confirmation_step
    return config, state, storage, replies


def _table_buttons(config: EngineConfig, confirmation_step: Step) -> list[tuple[str, str]]:
    return [(config.catalog.text("en", f"button.{label}"), data)
            for label, data in CONFIRMATIONS[confirmation_step].buttons[0]]


def test_every_confirmation_step_is_in_the_table_and_routed_here() -> None:
    assert set(ROUTES) == set(CONFIRMATIONS) == {s for s in Step if s.value.startswith("confirm_")} - {
        Step.CONFIRM_FORGET}


@pytest.mark.parametrize("confirmation_step", list(ROUTES), ids=lambda s: s.value)
def test_the_question_and_its_repetition_show_the_tables_buttons(confirmation_step: Step) -> None:
    config, state, storage, replies = _asked(confirmation_step)
    expected = _table_buttons(config, confirmation_step)
    assert [(b.label, b.data) for b in replies[-1].buttons[-1]] == expected
    again = _run(step(config, state, _type("hmm?"), NOW), storage)  # neither yes nor no: asked again
    assert state.step == confirmation_step and storage.done == []
    assert [(b.label, b.data) for b in again[-1].buttons[-1]] == expected
    assert config.catalog.text("en", CONFIRMATIONS[confirmation_step].again, reason="x")[:12] in again[-1].text


@pytest.mark.parametrize("confirmation_step", list(ROUTES), ids=lambda s: s.value)
def test_only_its_own_yes_button_runs_the_action(confirmation_step: Step) -> None:
    config, state, storage, _ = _asked(confirmation_step)
    for other in CONFIRMATIONS.values():
        if other is not CONFIRMATIONS[confirmation_step]:
            _run(step(config, state, _press(other.yes_data), NOW), storage)
            assert storage.done == [] and state.step == confirmation_step, other.what
    _run(step(config, state, _press(CONFIRMATIONS[confirmation_step].yes_data), NOW), storage)
    assert len(storage.done) == 1 and state.step == Step.MENU
