"""What the chat says where wording matters: /help lists what works in each state, the reasons a
student may not have a credential as a punctuated list, cancel back to the menu, /renew refused with
its reason, the e-mail's greeting."""

from __future__ import annotations

import pytest

from core.app.context import AppContext
from core.messaging.outbox import open_body
from tests.chat_driver import ChatDriver
from tests.support.chat import apply_in_chat, bound_chat

# --- /help lists what works in each state -----------------------------------------------------

@pytest.mark.parametrize("language", ["pl", "en"])
def test_help_before_binding_lists_the_commands_that_work(sqlite_ctx: AppContext, language: str) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.start_in(language)
    chat.say("/help")
    for command in ("/request", "/terms", "/cancel", "/language", "/forget", "/help"):
        assert command in chat.text, command
    assert "/renew" not in chat.text


@pytest.mark.parametrize("language", ["pl", "en"])
def test_help_before_the_terms_are_accepted(sqlite_ctx: AppContext, language: str) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.say("/start")
    chat.press(f"lang:{language}")
    chat.say("/help")
    assert "/terms" in chat.text and "terms:accept" in chat.buttons


@pytest.mark.parametrize("language", ["pl", "en"])
def test_help_after_binding_lists_commands_and_still_offers_activation_help(
    sqlite_ctx: AppContext, language: str,
) -> None:
    chat, _ = bound_chat(sqlite_ctx, language)
    chat.say("/help")
    for command in ("/status", "/request", "/renew", "/revoke", "/support", "/terms", "/cancel", "/forget"):
        assert command in chat.text, command
    assert "help:step" in chat.buttons
    chat.press("menu:status")
    chat.press("menu:help")  # the "How to activate" button: activation only
    assert "/renew" not in chat.text and "help:step" in chat.buttons


# --- ineligibility, cancel, renew, greetings -------------------------------------------------------

def test_single_ineligibility_reason_ends_with_a_full_stop(sqlite_ctx: AppContext) -> None:
    chat, _ = bound_chat(sqlite_ctx, "en", status="graduated")
    assert "• you have graduated, and the mobile student ID is only for current students." in chat.text
    assert ";" not in chat.text.split("can't be issued to you")[1]


def test_several_ineligibility_reasons_are_a_punctuated_list(sqlite_ctx: AppContext) -> None:
    chat, _ = bound_chat(sqlite_ctx, "pl", study_level="doctoral", status="suspended")
    assert "mLegitymacja nie może zostać wydana, ponieważ:" in chat.text
    assert "Teraz nie możesz" not in chat.text
    assert "nie przysługuje;\n• masz zawieszone prawa studenta – wyjaśnij to w dziekanacie." in chat.text


def test_cancel_shows_the_menu(sqlite_ctx: AppContext) -> None:
    chat, _ = bound_chat(sqlite_ctx, "en")
    chat.press("menu:request")
    chat.press("confirm:no")
    assert "Cancelled." in chat.text and "menu:status" in chat.buttons
    chat.say("/cancel")
    assert "Cancelled." in chat.text and "menu:support" in chat.buttons


@pytest.mark.parametrize(("language", "said", "unsaid"), [
    ("pl", ("Przedłużenie nie jest możliwe", "doktoranci"), "złóż wniosek"),
    ("en", ("Renewal isn't possible", "doctoral students"), "apply"),
])
def test_renew_for_a_student_who_may_not_have_one_says_why(
    sqlite_ctx: AppContext, language: str, said: tuple[str, str], unsaid: str,
) -> None:
    chat, _ = bound_chat(sqlite_ctx, language, study_level="doctoral")
    chat.say("/renew")
    assert all(phrase in chat.text for phrase in said), chat.text
    assert unsaid not in chat.text


def test_polish_e_mail_greeting_has_its_comma(sqlite_ctx: AppContext) -> None:
    chat, student = bound_chat(sqlite_ctx)
    apply_in_chat(chat)
    text = open_body(sqlite_ctx.box, chat.outbox("activation")[0]).text
    # Polish without the name (it would need the vocative); English with it.
    assert "Dzień dobry,\n" in text and f"Dzień dobry, {student.first_name}" not in text
    assert f"Hello {student.first_name}," in text
