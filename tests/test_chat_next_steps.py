"""A stressed student can follow what the chat says next (issue 19): the lost phone's new
application waits for the phone, buttons and re-prompts name what the student does, an escalation
says when the answer comes, and permanent ineligibility is never "not yet"."""

from __future__ import annotations

from core.app.catalog import LANGUAGES, Catalog
from core.app.context import AppContext
from core.app.settings import PROJECT_ROOT
from core.storage.db import unit_of_work
from tests.chat_driver import ChatDriver
from tests.factories import add_student


def _bound(ctx: AppContext, language: str, **kw: object) -> ChatDriver:
    with unit_of_work(ctx.engine) as session:
        student, pesel = add_student(session, ctx.box, **kw)
    chat = ChatDriver(ctx)
    chat.identify(pesel, student.album, language)
    return chat


def _button_labels(chat: ChatDriver) -> list[str]:
    return [b.label for r in chat.replies for row in r.buttons for b in row]


def test_lost_phone_says_to_apply_once_the_new_phone_is_at_hand(sqlite_ctx: AppContext) -> None:
    chat = _bound(sqlite_ctx, "pl")
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    chat.say("zgubiłem telefon")
    assert "gdy nowy telefon będzie już pod ręką" in chat.text and "30 dni" in chat.text
    assert "od razu zamówić" not in chat.text
    chat.press("confirm:yes:revoke")
    assert "mLegitymacja została unieważniona" in chat.text and "gdy nowy telefon będzie już pod ręką" in chat.text
    assert "📝 Złóż wniosek o nową" in _button_labels(chat)  # what the student does, not "Wydaj nową"


def test_revoking_for_another_reason_does_not_talk_of_a_phone(sqlite_ctx: AppContext) -> None:
    chat = _bound(sqlite_ctx, "en")
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    chat.say("/revoke")
    chat.press("revoke:student_request")
    chat.press("confirm:yes:revoke")
    assert "has been revoked" in chat.text and "phone" not in chat.text
    assert "📝 Apply for a new one" in _button_labels(chat)


def test_a_question_during_a_confirmation_repeats_it_naming_the_buttons_shown(sqlite_ctx: AppContext) -> None:
    chat = _bound(sqlite_ctx, "en")
    chat.press("menu:request")
    assert "Shall I go ahead?" in chat.text and "Do you confirm" not in chat.text
    chat.say("how much does it cost?")
    labels = _button_labels(chat)
    assert "free of charge" in chat.text
    assert 'shall I apply for your mobile student ID? Choose "✅ Confirm" or "Cancel".' in chat.text
    assert "✅ Confirm" in labels and "Cancel" in labels
    chat.say("hmm")
    assert "I'm not sure that's a yes." in chat.text and 'Choose "✅ Confirm" or "Cancel"' in chat.text


def test_an_unclear_answer_at_forget_names_its_buttons(sqlite_ctx: AppContext) -> None:
    chat = _bound(sqlite_ctx, "pl")
    chat.say("/forget")
    chat.say("hmm")
    assert "Wybierz „Tak, usuń”" in chat.text and "„Anuluj”" in chat.text
    assert {"Tak, usuń", "Anuluj"} <= set(_button_labels(chat))


def test_the_fallback_offers_a_next_step() -> None:
    """Said when nothing else answers, before the step's own prompt: it points to /help."""
    catalog = Catalog.load(PROJECT_ROOT / "config" / "messages")
    assert all("/help" in catalog.text(language, "fallback") for language in LANGUAGES)


def test_a_command_before_identification_says_identification_comes_first(sqlite_ctx: AppContext) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("pl")
    chat.say("/request")
    assert "potwierdzić Twoją tożsamość" in chat.text and "Podaj swój numer PESEL" in chat.text


def test_an_escalation_says_when_the_answer_comes(sqlite_ctx: AppContext) -> None:
    chat = _bound(sqlite_ctx, "pl")
    chat.say("/support")
    chat.say("Mam pytanie o coś zupełnie innego niż wszystko")
    assert "zwykle w ciągu dwóch dni roboczych" in chat.text  # as the e-mail's acknowledgement says
    chat = _bound(sqlite_ctx, "en")
    chat.say("/support")
    chat.say("A question about something else entirely")
    assert "usually within two working days" in chat.text


def test_a_doctoral_student_is_not_told_not_yet(sqlite_ctx: AppContext) -> None:
    chat = _bound(sqlite_ctx, "pl", study_level="doctoral")
    assert "Nie masz mLegitymacji." in chat.text and "jeszcze" not in chat.text and "teraz" not in chat.text
    chat = _bound(sqlite_ctx, "en", status="graduated")
    assert "You don't have a mobile student ID." in chat.text and " yet" not in chat.text and " now" not in chat.text
