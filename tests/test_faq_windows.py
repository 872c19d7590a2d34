"""The FAQ states the activation and renewal windows the settings set, not a hand-written "30 dni".

`credential.activation_window_days` and `credential.renewal_window_days` are settings; the answers
said "30 dni" / "30 days" whatever they were. Now an answer names the window as a placeholder,
filled at load in words with the noun form the number takes (core.support.faq.WINDOWS).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.app.catalog import LANGUAGES
from core.app.clock import FixedClock
from core.app.context import AppContext
from core.app.settings import PROJECT_ROOT
from core.app.settings_sections import CredentialSettings
from core.storage.db import make_engine
from core.support.faq import Faq
from tests.chat_driver import ChatDriver
from tests.factories import build_ctx, make_settings

FAQ = PROJECT_ROOT / "config" / "faq"


def _answers(faq: Faq, language: str) -> dict[str, str]:
    """Every answer, each policy's too, by "<entry>" or "<entry>/<policy>"."""
    found = {}
    for entry in faq.entries(language):
        found[entry.id] = entry.answer
        for policy in ("els", "standalone"):
            found[f"{entry.id}/{policy}"] = entry.answer_for(policy)
    return found


@pytest.fixture
def short_windows_ctx(tmp_path: Path, sqlite_url: str, clock: FixedClock) -> Iterator[AppContext]:
    settings = make_settings(tmp_path, database_url=sqlite_url,
                             credential={"activation_window_days": 14, "renewal_window_days": 1})
    engine = make_engine(sqlite_url)
    yield build_ctx(settings, engine, clock)
    engine.dispose()


def test_the_answers_state_the_configured_windows_with_their_noun_form() -> None:
    faq = Faq.load(FAQ, credential=CredentialSettings(activation_window_days=14, renewal_window_days=22))
    pl, en = _answers(faq, "pl"), _answers(faq, "en")
    assert "ważne 14 dni od wysłania" in pl["code_expired"] and "ważne 14 dni od wysłania" in pl["new_phone"]
    assert "najwcześniej 22 dni przed końcem" in pl["renewal"]
    assert "najwcześniej 22 dni przed końcem" in pl["renewal/els"]
    assert "valid for 14 days from sending" in en["code_expired"] and "valid for 14 days" in en["new_phone"]
    assert "from 22 days before it ends" in en["renewal"] and "from 22 days before the current one" in en["renewal/els"]
    one_day = _answers(Faq.load(FAQ, credential=CredentialSettings(renewal_window_days=1)), "pl")
    assert "najwcześniej 1 dzień przed końcem" in one_day["renewal"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_answer_states_a_window_by_hand_or_leaves_a_placeholder(language: str) -> None:
    answers = _answers(Faq.load(FAQ, credential=CredentialSettings(activation_window_days=14,
                                                                   renewal_window_days=7)), language)
    by_hand = {key: text for key, text in answers.items() if re.search(r"\b30 (dni|days)\b", text)}
    unfilled = {key: text for key, text in answers.items() if re.search(r"\{\w*\}", text)}
    assert not by_hand and not unfilled


def test_the_context_fills_the_faq_from_its_settings(short_windows_ctx: AppContext) -> None:
    """The chat, the mailbox and the console share the context's FAQ (tests/test_faq_shared.py)."""
    entry = short_windows_ctx.faq.get("pl", "code_expired")
    assert entry is not None and "ważne 14 dni" in entry.answer
    chat = ChatDriver(short_windows_ctx)
    chat.say("/start")
    chat.press("lang:en")
    chat.press("terms:decline")
    chat.say("I didn't activate within 30 days, the code expired")
    assert "valid for 14 days from sending" in chat.text


def test_an_unknown_placeholder_fails_the_load(tmp_path: Path) -> None:
    for language in LANGUAGES:
        (tmp_path / f"{language}.toml").write_text(
            '[[entry]]\nid = "x"\nanswer = "Valid for {activation_windw}."\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"entry 'x': unknown placeholder \{activation_windw\}"):
        Faq.load(tmp_path)
