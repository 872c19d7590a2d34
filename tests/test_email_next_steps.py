"""Every e-mail that sends a student to the bot says where it is, and names the help desk's address.

"Apply again in the chat with the university's bot" is a dead end to a student who does not
know which bot: with MLEG_TELEGRAM__BOT_USERNAME set each e-mail gives https://t.me/<username>;
without it, it words the chat without a link (never an empty one). The help desk's address
(MLEG_UNIVERSITY__HELP_DESK_EMAIL) is in every one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.app.errors import ConfigurationError
from core.credentials import service
from core.credentials.lifecycle import EndReason
from core.jobs import reminders, sweep
from core.messaging.contact import Contact
from core.messaging.outbox import open_body
from core.storage.db import make_engine, unit_of_work
from core.storage.models import Credential, InboundMail, OutboxMessage
from core.support.faq import Faq
from core.support.mailbox_rules import InboundFacts, handle_inbound
from tests.factories import build_ctx, issue, make_settings
from tests.support.lifecycle import activate, at

HELP_DESK = "pomoc.mlegitymacja@example.edu.pl"
BOT = "UczelniaDemoBot"
LINK = f"https://t.me/{BOT}"
SEPARATOR = "\n\n----------\n\n"


@pytest.fixture(params=[BOT, ""], ids=["bot-username", "no-bot-username"])
def bot_ctx(request: pytest.FixtureRequest, tmp_path: Path, sqlite_url: str, clock: FixedClock) -> Iterator[AppContext]:
    settings = make_settings(tmp_path, database_url=sqlite_url, telegram={"bot_username": request.param},
                             university={"help_desk_email": HELP_DESK})
    engine = make_engine(sqlite_url)
    yield build_ctx(settings, engine, clock)
    engine.dispose()


def test_the_context_says_where_a_student_reaches_us_from_its_settings_once(bot_ctx: AppContext) -> None:
    """Every e-mail's sender reads `ctx.contact`: one object per context, as its settings say."""
    link = LINK if bot_ctx.settings.telegram.bot_username else ""
    assert bot_ctx.contact == Contact(help_desk=HELP_DESK, bot_link=link)
    assert bot_ctx.contact is bot_ctx.contact


def _texts(ctx: AppContext, kind: str) -> list[str]:
    with Session(ctx.engine) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.kind == kind)
                            .order_by(col(OutboxMessage.id))).all()
        assert rows, f"no {kind} e-mail"
        return [open_body(ctx.box, row).text for row in rows]


def _says_where(ctx: AppContext, text: str, *, chat: bool = True) -> None:
    """Both halves (Polish and English) name the help desk and, when they send the student to
    the chat, where the chat is."""
    halves = text.split(SEPARATOR)
    assert len(halves) == 2
    for half in halves:
        assert HELP_DESK in half, half
        if not chat:
            continue
        if ctx.settings.telegram.bot_username:
            assert LINK in half, half
        else:
            assert "t.me" not in half and "()" not in half, half
            assert "w czacie z botem uczelni w Telegramie" in half or "with the university's bot on Telegram" in half


def test_activation_revocation_and_reminder_e_mails_say_where(bot_ctx: AppContext) -> None:
    ctx = bot_ctx
    at(ctx, "2026-10-05T11:00:00+02:00")
    _, cid = issue(ctx)
    [activation] = _texts(ctx, "activation")
    _says_where(ctx, activation)
    activate(ctx, cid)

    at(ctx, "2027-03-17T10:00:00+01:00")  # 14 days before the end of validity
    reminders(ctx)
    for text in _texts(ctx, "reminder"):  # by e-mail: no chat is linked
        _says_where(ctx, text)

    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, cid)
        assert credential is not None
        service.revoke(ctx, session, credential, reason=EndReason.LOST_PHONE, actor="staff")
    [revoked] = _texts(ctx, "revoked")
    _says_where(ctx, revoked)
    if ctx.settings.telegram.bot_username:
        # A link a student taps in the HTML part, once per language.
        with Session(ctx.engine) as session:
            row = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "revoked")).one()
            html = open_body(ctx.box, row).html or ""
        assert html.count(f'<a href="{LINK}">{LINK}</a>') == 2


def test_expired_activation_data_says_it_was_never_used_and_where_to_apply(bot_ctx: AppContext) -> None:
    ctx = bot_ctx
    at(ctx, "2026-10-05T11:00:00+02:00")
    issue(ctx)
    at(ctx, "2026-11-05T11:00:00+01:00")  # 31 days later: the activation data died unused
    sweep(ctx)
    [text] = _texts(ctx, "activation_expired")
    _says_where(ctx, text)
    assert "nie zostały użyte w terminie" in text and "was not used in time" in text
    assert "Złóż wniosek" in text


def test_escalation_acknowledgement_says_when_and_where(bot_ctx: AppContext) -> None:
    ctx = bot_ctx
    facts = InboundFacts(sender="ola@example.org", subject="Zebranie samorządu",
                         text="Czy samorząd studentów spotyka się w czwartek w auli B?",
                         message_id="<escalate-1@example.org>")
    with unit_of_work(ctx.engine) as session:
        stored = InboundMail(mailbox="INBOX", uidvalidity=1, uid=1, message_id=facts.message_id,
                             digest="escalate-1", size=100, received_at=ctx.clock.now())
        session.add(stored)
        session.flush()
        handle_inbound(ctx, session, facts, inbound_id=stored.id or 0, faq=Faq.load(ctx.settings.config_dir / "faq"))
    [text] = _texts(ctx, "mail-notice")
    assert "dwóch dni roboczych" in text and HELP_DESK in text
    assert (LINK in text) == bool(ctx.settings.telegram.bot_username)


def test_html_activation_code_is_labelled_apart_from_the_qr_text(sqlite_ctx: AppContext) -> None:
    ctx = sqlite_ctx
    issue(ctx)
    with Session(ctx.engine) as session:
        row = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "activation")).one()
        message = open_body(ctx.box, row)
    code = message.text.split("Kod aktywacyjny: ")[1].split()[0]
    assert message.html is not None
    paragraphs = re.findall(r"<p>(.*?)</p>", message.html, flags=re.S)
    with_code = [p for p in paragraphs if code in p]
    assert len(with_code) == 2  # once per language
    for paragraph in with_code:
        # The label comes first, in the same paragraph; the QR text is in another one.
        label, _, _ = paragraph.partition(code)
        assert "Kod aktywacyjny (" in label or "Activation code (" in label
        assert "<code" not in paragraph


def test_the_bot_username_setting() -> None:
    from core.app.settings_sections import TelegramSettings

    assert TelegramSettings().bot_username == ""
    assert TelegramSettings(bot_username="@UczelniaDemoBot").bot_username == "UczelniaDemoBot"
    with pytest.raises(ValueError, match="not a Telegram bot username"):
        TelegramSettings(bot_username="https://t.me/x")


def test_a_wrong_bot_username_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises((ConfigurationError, ValueError)):
        make_settings(tmp_path, telegram={"bot_username": "no spaces allowed"})
