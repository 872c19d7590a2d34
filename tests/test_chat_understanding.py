"""Students are understood in their own words in every step of the chat (issue 15's five transcripts).

Console side: the conversation service as `mleg chat` drives it (tests/chat_driver.py). The same
steps on Telegram are in tests/test_bot_understanding.py.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from core.app.context import AppContext
from core.storage.db import unit_of_work
from core.storage.models import Credential, SupportThread
from tests.chat_driver import ChatDriver
from tests.factories import add_student


def _bound(ctx: AppContext) -> ChatDriver:
    with unit_of_work(ctx.engine) as session:
        student, pesel = add_student(session, ctx.box)
    chat = ChatDriver(ctx)
    chat.identify(pesel, student.album)
    return chat


def _credentials(ctx: AppContext) -> list[Credential]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(Credential).order_by(col(Credential.id))).all())


def test_a_question_at_the_terms_is_answered_and_the_terms_asked_again(sqlite_ctx: AppContext) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.say("/start")
    chat.press("lang:pl")
    chat.say("Mam pytanie: czy doktorant może mieć mLegitymację?")
    assert "doktorant" in chat.text  # the answer
    assert "Najpierw potrzebuję Twojej decyzji o regulaminie" in chat.text  # and the step still waiting
    assert {"terms:accept", "terms:decline"} <= set(chat.buttons)
    chat.press("terms:accept")
    assert "regulamin zaakceptowany" in chat.text


def test_terms_accepted_in_a_sentence_and_a_pesel_there_is_told_what_is_expected(sqlite_ctx: AppContext) -> None:
    chat = ChatDriver(sqlite_ctx)
    chat.say("/start")
    chat.press("lang:pl")
    chat.say("44051401359")  # a PESEL typed before the terms are accepted
    assert "Najpierw potrzebuję Twojej decyzji o regulaminie" in chat.text
    assert "„✅ Akceptuję”" in chat.text and "terms:accept" in chat.buttons
    chat.say("tak, akceptuję")
    assert "regulamin zaakceptowany" in chat.text and "PESEL" in chat.text


def test_apply_typed_at_the_menu_leads_to_the_applications_confirmation(sqlite_ctx: AppContext) -> None:
    chat = _bound(sqlite_ctx)
    for typed in ("chcę złożyć wniosek", "wniosek"):
        chat.say(typed)
        assert "Złożę wniosek o mLegitymację" in chat.text, typed
        assert "confirm:yes:request" in chat.buttons
        assert "Przekazać je do biura" not in chat.text
        chat.press("confirm:no")
    assert _credentials(sqlite_ctx) == []  # never an action without its confirmation
    chat.say("chce zlozyc wnosek")
    chat.press("confirm:yes:request")
    assert [c.state for c in _credentials(sqlite_ctx)] == ["pending_activation"]


def test_the_menu_after_a_cancelled_offer_still_offers_apply(sqlite_ctx: AppContext) -> None:
    chat = _bound(sqlite_ctx)
    chat.say("jaka jest pogoda w Krakowie")
    assert "confirm:yes:support" in chat.buttons
    chat.press("confirm:no")
    assert "menu:request" in chat.buttons


def test_after_an_escalation_the_menu_comes_back(sqlite_ctx: AppContext) -> None:
    chat = _bound(sqlite_ctx)
    chat.say("czy mogę zapłacić za akademik w ratach")
    chat.press("confirm:yes:support")
    assert "Twoje pytanie trafiło do biura obsługi" in chat.text
    assert "menu:request" in chat.buttons and "menu:support" in chat.buttons
    with Session(sqlite_ctx.engine) as session:
        assert len(session.exec(select(SupportThread)).all()) == 1


def test_lost_phone_at_the_help_desk_prompt_is_heard_and_named(sqlite_ctx: AppContext) -> None:
    chat = _bound(sqlite_ctx)
    chat.say("wniosek")
    chat.press("confirm:yes:request")
    chat.say("czy mogę zapłacić za akademik w ratach")
    assert "confirm:yes:support" in chat.buttons
    chat.say("zgubiłem telefon, co robić?")
    assert "Unieważnić mLegitymację z powodu zgubionego telefonu?" in chat.text
    assert "confirm:yes:revoke" in chat.buttons
    assert "Potwierdź" not in chat.text
    chat.press("confirm:yes:revoke")
    assert [c.state for c in _credentials(sqlite_ctx)] == ["revoked"]
    with Session(sqlite_ctx.engine) as session:
        assert session.exec(select(SupportThread)).all() == []  # the draft was not sent


def test_a_question_at_a_confirmation_is_answered_and_the_confirmation_asked_again(
        sqlite_ctx: AppContext) -> None:
    chat = _bound(sqlite_ctx)
    chat.say("wniosek")
    chat.say("ile to kosztuje?")
    assert "bezpłatna" in chat.text
    assert "Nadal czekam na Twoją decyzję: złożyć wniosek o mLegitymację?" in chat.text
    assert "confirm:yes:request" in chat.buttons
    chat.say("asdf qwer")
    assert "„✅ Potwierdź” albo „Anuluj”" in chat.text
    chat.say("tak")
    assert [c.state for c in _credentials(sqlite_ctx)] == ["pending_activation"]


def test_not_understood_text_gets_the_likeliest_options_before_the_help_desk(sqlite_ctx: AppContext) -> None:
    chat = _bound(sqlite_ctx)
    chat.say("hej, chce mlegitke")
    offered = [b for b in chat.buttons if b.startswith("intent:")]
    assert 1 <= len(offered) <= 3 and "intent:apply" in offered
    assert "confirm:yes:support" in chat.buttons
    chat.press("intent:apply")
    assert "confirm:yes:request" in chat.buttons


def test_asking_for_a_person_at_the_help_desk_prompt_sends_the_question(sqlite_ctx: AppContext) -> None:
    chat = _bound(sqlite_ctx)
    chat.say("czy mogę zapłacić za akademik w ratach")
    chat.say("chcę rozmawiać z człowiekiem")
    assert "Twoje pytanie trafiło do biura obsługi" in chat.text
    with Session(sqlite_ctx.engine) as session:
        [thread] = session.exec(select(SupportThread)).all()
    assert thread.status == "escalated"


def test_the_chat_code_not_arriving_is_answered_at_the_code_step(sqlite_ctx: AppContext) -> None:
    with unit_of_work(sqlite_ctx.engine) as session:
        student, pesel = add_student(session, sqlite_ctx.box)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in()
    chat.say(pesel)
    chat.say(student.album)
    chat.say("nie dostałem kodu do czatu")
    assert "Jednorazowy kod do czatu przychodzi tylko na Twój adres uczelniany" in chat.text
    assert "code:resend" in chat.buttons


def _threads(ctx: AppContext) -> list[SupportThread]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(SupportThread)).all())


def test_a_typed_yes_to_the_one_meaning_offered_takes_it(sqlite_ctx: AppContext) -> None:
    """"Is it one of these?" with one button: "tak" means that one, never "send it to staff"."""
    chat = _bound(sqlite_ctx)
    chat.say("zlozyc wniosk")  # a typo: apply, not surely enough to act on
    assert [b for b in chat.buttons if b.startswith("intent:")] == ["intent:apply"]
    chat.say("tak")
    assert "confirm:yes:request" in chat.buttons
    assert _threads(sqlite_ctx) == []


def test_a_typed_yes_to_several_meanings_asks_which_and_sends_nothing(sqlite_ctx: AppContext) -> None:
    chat = _bound(sqlite_ctx)
    chat.say("telefon")  # lost or new?
    offered = [b for b in chat.buttons if b.startswith("intent:")]
    assert offered == ["intent:revoke_lost_phone", "intent:new_phone"]
    chat.say("tak")
    assert chat.text == sqlite_ctx.catalog.text("pl", "understand.which", send="Przekaż do biura", no="Nie")
    assert [b for b in chat.buttons if b.startswith("intent:")] == offered and "confirm:yes:support" in chat.buttons
    chat.say("nie")  # the "Nie" button: nothing goes to staff
    assert "Anulowano" in chat.text and _threads(sqlite_ctx) == []


def test_a_question_clearly_out_of_scope_offers_no_noise_and_yes_sends_it(sqlite_ctx: AppContext) -> None:
    """No button for a meaning given less than one chance in ten ("what it is" for dormitory fees)."""
    chat = _bound(sqlite_ctx)
    chat.say("czy mogę zapłacić za akademik w ratach")
    assert not [b for b in chat.buttons if b.startswith("intent:")]
    chat.say("tak")
    assert "Twoje pytanie trafiło do biura obsługi" in chat.text and len(_threads(sqlite_ctx)) == 1


def test_revoking_in_words_asks_the_reason_and_never_offers_an_application(sqlite_ctx: AppContext) -> None:
    """"chcę unieważnić mLegitymację" was taken for an application (0.96 sure): the opposite action."""
    chat = _bound(sqlite_ctx)
    chat.say("chcę unieważnić mLegitymację")
    assert "confirm:yes:request" not in chat.buttons and "revoke:lost_phone" not in chat.buttons
    assert chat.text == sqlite_ctx.catalog.text("pl", "revoke.nothing")  # nothing to revoke yet
    chat.press("menu:status")
    chat.press("menu:request")
    chat.press("confirm:yes:request")
    for typed in ("chcę unieważnić mLegitymację", "uniewaznij"):
        chat.say(typed)
        assert {"revoke:lost_phone", "revoke:new_phone", "revoke:student_request"} <= set(chat.buttons), typed
        chat.press("confirm:no")
    chat.say("I want to revoke my mobile ID")
    assert "revoke:student_request" in chat.buttons
    chat.press("revoke:student_request")
    chat.press("confirm:yes:revoke")
    assert [c.state for c in _credentials(sqlite_ctx)] == ["revoked"]
