"""Under the ELS policy nothing says "renew": the FAQ's answer, the e-mail answer, the intro, the
command help and the Telegram menu speak of a new application; the standalone policy keeps its words."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlmodel import Session, select

from bot.commands import command_list
from core.app.catalog import LANGUAGES
from core.app.context import AppContext
from core.app.settings import PROJECT_ROOT
from core.messaging.outbox import open_body
from core.storage.db import unit_of_work
from core.storage.models import InboundMail, OutboxMessage, Student
from core.support.faq import Faq
from core.support.mailbox_rules import InboundFacts, handle_inbound
from tests.chat_driver import ChatDriver
from tests.support.lifecycle import enrolled

CONFIG = PROJECT_ROOT / "config"


# --- the ELS policy never says "renew" ------------------------------------------------------------

RENEW_WORDS = ("renew", "Renew", "przedłuż", "Przedłuż")


def _bound_chat(ctx: AppContext, lang: str) -> ChatDriver:
    _, pesel, album = enrolled(ctx, els_valid_until=date(2027, 9, 30))
    second = album
    with Session(ctx.engine) as session:
        student = session.exec(select(Student).where(Student.album == album)).one()
        if ctx.settings.policy == "els":
            second = student.els_number or ""
    chat = ChatDriver(ctx)
    chat.identify(pesel, second, lang)
    return chat


@pytest.mark.parametrize(("lang", "question"), [
    ("pl", "Jak przedłużyć mLegitymację na nowy semestr?"),
    ("en", "How do I renew my mLegitymacja for the next semester?"),
])
def test_faq_renewal_answer_follows_the_policy(els_ctx: AppContext, sqlite_ctx: AppContext, lang: str,
                                               question: str) -> None:
    els = _bound_chat(els_ctx, lang)
    els.say(question)
    assert "ELS" in els.text and "/request" in els.text and "/renew" not in els.text
    assert "menu:request" in els.buttons and "menu:renew" not in els.buttons
    standalone = _bound_chat(sqlite_ctx, lang)
    standalone.say(question)
    assert "/renew" in standalone.text and "menu:renew" in standalone.buttons


def test_faq_renewal_mail_answer_follows_the_policy(els_ctx: AppContext) -> None:
    facts = InboundFacts(sender="someone@example.org", subject="Przedłużenie",
                         text="Jak przedłużyć mLegitymację na nowy semestr?", message_id="<q1@example.org>")
    with unit_of_work(els_ctx.engine) as session:
        stored = InboundMail(mailbox="INBOX", uidvalidity=1, uid=1, message_id=facts.message_id, digest="q1",
                             size=100, received_at=els_ctx.clock.now())
        session.add(stored)
        session.flush()
        outcome = handle_inbound(els_ctx, session, facts, inbound_id=stored.id or 0, faq=Faq.load(CONFIG / "faq"))
    assert outcome.reason == "answered from the FAQ (renewal)"
    with Session(els_ctx.engine) as session:
        row = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "mail-answer")).one()
    text = open_body(els_ctx.box, row).text
    assert "ELS" in text and "/renew" not in text and "Przedłuż”" not in text


def test_faq_entries_without_a_policy_answer_keep_the_one_answer(tmp_path: Path) -> None:
    """The FAQ file format stays as it was: `answer` alone is every policy's answer."""
    for lang in ("pl", "en"):
        (tmp_path / f"{lang}.toml").write_text(
            'topic = ["kod*", "code*"]\n[[entry]]\nid = "x"\nstrong = ["kod wygas*", "code expired"]\n'
            'answer = "Plain."\n', encoding="utf-8")
    faq = Faq.load(tmp_path)
    entry = faq.get("pl", "x")
    assert entry is not None
    assert entry.answer == entry.answer_for("els") == entry.answer_for("standalone") == "Plain."
    assert entry.action_for("els") is None
    real = Faq.load(CONFIG / "faq").get("en", "renewal")
    assert real is not None and real.answer_for("standalone") == real.answer and real.answer_for("els") != real.answer


@pytest.mark.parametrize("lang", LANGUAGES)
def test_intro_and_command_help_follow_the_policy(els_ctx: AppContext, sqlite_ctx: AppContext, lang: str) -> None:
    renew_line = {"pl": "/renew – przedłużenie", "en": "/renew – renew"}[lang]
    for ctx, policy in ((els_ctx, "els"), (sqlite_ctx, "standalone")):
        chat = ChatDriver(ctx)
        chat.say("/start")
        chat.press(f"lang:{lang}")
        intro = chat.replies[0].text
        chat = _bound_chat(ctx, lang)
        chat.say("/help")
        if policy == "els":
            assert not any(word in intro for word in RENEW_WORDS), intro
            assert renew_line not in chat.text and "ELS" in chat.text
        else:
            assert any(word in intro for word in RENEW_WORDS)
            assert renew_line in chat.text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_telegram_menu_describes_renew_by_policy(sqlite_ctx: AppContext, lang: str) -> None:
    standalone = {c.command: c.description for c in command_list(sqlite_ctx.catalog, lang)}
    els = {c.command: c.description for c in command_list(sqlite_ctx.catalog, lang, policy="els")}
    assert any(word in standalone["renew"] for word in RENEW_WORDS)
    assert not any(word in els["renew"] for word in RENEW_WORDS) and "ELS" in els["renew"]
    assert 0 < len(els["renew"]) <= 256
    assert {k: v for k, v in els.items() if k != "renew"} == {k: v for k, v in standalone.items() if k != "renew"}


def test_readme_says_renewal_under_els_is_a_new_application() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert "ELS" in readme and "new application" in readme
