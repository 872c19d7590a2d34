"""Follow-ups of a domain audit (docs/domain.md): what the chat, the e-mail answers, the CLI and the
Telegram menu say must agree with each other and with the issuing policy in force.

1. The e-mail status answer gives the end a removal brings forward, and the reasons a student
   may not have a credential; `mleg credentials` shows that end too.
2. Activation data is never to be used after the credential it activates has ended.
3. A new terms version is in force for the next turn without a restart; one dated in the
   future is not in force before its date.
4. The revocation e-mail gives its reason in each half's own language.
5. At the chat-code step "the e-mail did not arrive" is about the chat code.
6. An ineligible student is never told "you can apply again".
7. Under the ELS policy nothing says "renew": it is a new application.
8. FAQ questions the audit found unanswered.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from bot.commands import command_list
from core import credentials as service
from core import terms as terms_module
from core.catalog import LANGUAGES
from core.clock import FixedClock
from core.context import AppContext
from core.db import make_engine, unit_of_work
from core.faq import Faq
from core.lifecycle import EndReason, transition
from core.mailbox_rules import InboundFacts, _status_text, handle_inbound
from core.models import Credential, CredentialState, InboundMail, OutboxMessage, Student, TermsAcceptance
from core.outbox import open_body
from core.semester import end_of_day, removal_deadline
from core.settings import PROJECT_ROOT
from tests.chat_driver import ChatDriver
from tests.cli_helpers import cli_environment, run
from tests.factories import add_student, build_ctx, make_settings

REMOVED_ON = date(2026, 9, 20)  # a month later, 20 October 2026, the credential ends
CONFIG = PROJECT_ROOT / "config"


def _fmt(day: date) -> str:
    return day.strftime("%d.%m.%Y")


def _new_student(ctx: AppContext, **kw: object) -> tuple[int, str, str]:
    """(student id, PESEL, album) of a new student."""
    with unit_of_work(ctx.engine) as session:
        student, pesel = add_student(session, ctx.box, **kw)
        return student.id or 0, pesel, student.album


def _request(ctx: AppContext, student_id: int) -> int:
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        assert student is not None
        return service.request_credential(ctx, session, student, channel="console", actor="test").id or 0


def _activate(ctx: AppContext, credential_id: int) -> None:
    with unit_of_work(ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        transition(session, credential, CredentialState.ACTIVE, actor="test", reason="activated",
                   now=ctx.clock.now())


def _update_student(ctx: AppContext, student_id: int, **values: object) -> None:
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        assert student is not None
        for name, value in values.items():
            setattr(student, name, value)
        session.add(student)


def _mail_status(ctx: AppContext, student_id: int, lang: str) -> str:
    with unit_of_work(ctx.engine) as session:
        student = session.get(Student, student_id)
        assert student is not None
        return _status_text(ctx, session, student, lang)


def _removed_with_pending_data(ctx: AppContext) -> tuple[int, int, str, str]:
    """A student who applied on 5 October 2026 (valid until 31 March 2027, activation by 4 November)
    and was removed from the list on 20 September, noticed by the register a day later."""
    student_id, pesel, album = _new_student(ctx)
    credential_id = _request(ctx, student_id)
    _update_student(ctx, student_id, status="removed", removed_on=REMOVED_ON)
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    clock.advance(timedelta(days=1))
    return student_id, credential_id, pesel, album


# --- 1. the e-mail status answer and the CLI -----------------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
def test_status_mail_of_removed_student_with_pending_data_gives_the_removal_end(
        sqlite_ctx: AppContext, lang: str) -> None:
    student_id, _, _, _ = _removed_with_pending_data(sqlite_ctx)
    ends = removal_deadline(REMOVED_ON)
    text = _mail_status(sqlite_ctx, student_id, lang)
    assert _fmt(ends) in text
    assert "31.03.2027" not in text  # the credential's own end, a removal brings forward
    assert "04.11.2026" not in text  # activation by a day the credential no longer lives
    assert "removed" in text or "skreślon" in text


@pytest.mark.parametrize("status", ["removed", "graduated", "doctoral"])
def test_status_mail_without_a_credential_tells_why_one_cannot_be_had(sqlite_ctx: AppContext, status: str) -> None:
    overrides: dict[str, object] = ({"study_level": "doctoral"} if status == "doctoral"
                                    else {"status": status, "removed_on": REMOVED_ON if status == "removed" else None})
    student_id, _, _ = _new_student(sqlite_ctx, **overrides)
    for lang, intro in (("en", "You cannot have a mobile student ID now"),
                        ("pl", "Nie możesz teraz otrzymać mLegitymacji")):
        text = _mail_status(sqlite_ctx, student_id, lang)
        assert intro in text, text
        assert "apply again" not in text and "złożyć wniosek" not in text


def test_cli_credentials_show_the_end_a_removal_brings_forward(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, database_url=sqlite_url)
    engine = make_engine(sqlite_url)
    ctx = build_ctx(settings, engine, FixedClock(datetime(2026, 10, 5, 9, tzinfo=UTC)))
    _, _, _, removed_album = _removed_with_pending_data(ctx)
    kept_id, _, _ = _new_student(ctx)
    _request(ctx, kept_id)
    engine.dispose()
    env = cli_environment(tmp_path, sqlite_url, COLUMNS="250")

    listed = run(["credentials", "list", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    items = {i["student"]["album"]: i for i in json.loads(listed.stdout)}
    removed = items[removed_album]
    assert removed["valid_until"] == "2027-03-31"  # the existing key keeps its meaning
    assert removed["effective_valid_until"] == removal_deadline(REMOVED_ON).isoformat()
    kept = next(i for a, i in items.items() if a != removed_album)
    assert kept["effective_valid_until"] == kept["valid_until"] == "2027-03-31"

    shown = json.loads(run(["credentials", "show", str(removed["id"]), "--json"], env).stdout)
    assert shown["effective_valid_until"] == "2026-10-20"
    table = run(["credentials", "list"], env).stdout
    assert "2026-10-20" in table
    text = run(["credentials", "show", str(removed["id"])], env).stdout
    assert "effective_valid_until" in text and "2026-10-20" in text


# --- 2. the chat never asks to activate after the credential's end --------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
def test_chat_status_of_removed_student_activates_by_the_removal_end(sqlite_ctx: AppContext, lang: str) -> None:
    student_id, _, pesel, album = _removed_with_pending_data(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, album, lang)
    ends = removal_deadline(REMOVED_ON)
    assert _fmt(ends) + " 23:59" in chat.text  # activate by the credential's last day
    assert "04.11.2026" not in chat.text and "31.03.2027" not in chat.text
    # The e-mail says the same.
    assert _fmt(ends) + " 23:59" in _mail_status(sqlite_ctx, student_id, lang)


def test_effective_activation_deadline_is_the_earlier_one(sqlite_ctx: AppContext) -> None:
    student_id, credential_id, _, _ = _removed_with_pending_data(sqlite_ctx)
    with Session(sqlite_ctx.engine) as session:
        student, credential = session.get(Student, student_id), session.get(Credential, credential_id)
        assert student is not None and credential is not None and credential.activation_deadline is not None
        assert service.effective_activation_deadline(student, credential) == end_of_day(date(2026, 10, 20))
        student.status, student.removed_on = "active", None  # reinstated: the data's own deadline
        assert service.effective_activation_deadline(student, credential) == credential.activation_deadline


# --- 3. terms: a new version without a restart, a future one not before its date -----------------

@pytest.fixture
def own_config(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(CONFIG, target)
    return target


@pytest.fixture
def terms_ctx(tmp_path: Path, sqlite_url: str, clock: FixedClock, own_config: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[AppContext]:
    # Every turn looks at the directory (the default: every few seconds).
    monkeypatch.setattr("core.terms.TERMS_CHECK_SECONDS", 0.0)
    engine = make_engine(sqlite_url)
    yield build_ctx(make_settings(tmp_path, database_url=sqlite_url, config_dir=own_config), engine, clock)
    engine.dispose()


def _stage_terms(config: Path, version: str) -> None:
    for lang in ("pl", "en"):
        old = (config / "terms" / f"2025-10-01.{lang}.md").read_text(encoding="utf-8")
        (config / "terms" / f"{version}.{lang}.md").write_text(old + "\nNEW CLAUSE\n", encoding="utf-8")


def _versions(ctx: AppContext) -> list[str]:
    with Session(ctx.engine) as session:
        return sorted(a.version for a in session.exec(select(TermsAcceptance)).all())


def test_new_terms_are_in_force_for_the_next_turn_without_a_restart(terms_ctx: AppContext, own_config: Path) -> None:
    _, pesel, album = _new_student(terms_ctx)
    chat = ChatDriver(terms_ctx)
    chat.identify(pesel, album)
    chat.press("menu:request")
    _stage_terms(own_config, "2026-10-05")
    chat.say("tak")  # the same running service
    assert "Regulamin usługi zmienił się" in chat.text and "2026-10-05" in chat.text
    assert not chat.outbox("activation")  # nothing applied for under terms not accepted
    chat.press("terms:accept")
    assert _versions(terms_ctx) == ["2025-10-01", "2026-10-05"]


def test_terms_dated_in_the_future_come_into_force_on_their_date(terms_ctx: AppContext, own_config: Path) -> None:
    _, pesel, album = _new_student(terms_ctx)
    _stage_terms(own_config, "2026-10-07")  # staged two days ahead
    chat = ChatDriver(terms_ctx)
    chat.identify(pesel, album)
    assert "Regulamin" not in chat.text
    assert _versions(terms_ctx) == ["2025-10-01"]
    chat.say("/status")
    assert "Regulamin usługi zmienił się" not in chat.text
    clock = terms_ctx.clock
    assert isinstance(clock, FixedClock)
    clock.set(datetime(2026, 10, 6, 22, 30, tzinfo=UTC))  # 7 October, 00:30 in Warsaw
    chat.say("/status")
    assert "Regulamin usługi zmienił się" in chat.text and "2026-10-07" in chat.text


def test_load_terms_leaves_out_versions_dated_after_today(own_config: Path) -> None:
    _stage_terms(own_config, "2026-10-07")
    assert terms_module.load_terms(own_config / "terms").version == "2026-10-07"  # without a date: the newest
    assert terms_module.load_terms(own_config / "terms", today=date(2026, 10, 6)).version == "2025-10-01"
    assert terms_module.load_terms(own_config / "terms", today=date(2026, 10, 7)).version == "2026-10-07"


def test_terms_directory_is_looked_at_at_most_every_few_seconds(own_config: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = [100.0]
    source = terms_module.TermsSource(own_config / "terms", check_every=5.0, monotonic=lambda: ticks[0])
    today = date(2026, 10, 5)
    assert source.current(today).version == "2025-10-01"
    _stage_terms(own_config, "2026-10-05")
    ticks[0] += 4.0
    assert source.current(today).version == "2025-10-01"  # not looked at yet
    ticks[0] += 1.5
    assert source.current(today).version == "2026-10-05"
    # Half-written (only one language so far): the version in force stays.
    (own_config / "terms" / "2026-10-06.pl.md").write_text("x\n", encoding="utf-8")
    ticks[0] += 10
    assert source.current(date(2026, 10, 6)).version == "2026-10-05"
    # Between looks a turn costs a clock read and two comparisons: the directory is not read.
    looks: list[str] = []
    real_signature, real_load = terms_module._signature, terms_module.load_terms
    monkeypatch.setattr(terms_module, "_signature", lambda d: looks.append("list") or real_signature(d))
    monkeypatch.setattr(terms_module, "load_terms", lambda *a, **k: looks.append("load") or real_load(*a, **k))
    for _ in range(100):
        assert source.current(date(2026, 10, 6)).version == "2026-10-05"
    assert looks == []
    ticks[0] += 5.0
    source.current(date(2026, 10, 6))
    assert looks == ["list"]  # the next look, once


def test_terms_without_any_complete_version_keep_the_last_good_one(own_config: Path) -> None:
    ticks = [0.0]
    source = terms_module.TermsSource(own_config / "terms", check_every=1.0, monotonic=lambda: ticks[0])
    assert source.current(date(2026, 10, 5)).version == "2025-10-01"
    for path in (own_config / "terms").glob("*.md"):
        path.unlink()
    ticks[0] += 2
    assert source.current(date(2026, 10, 5)).version == "2025-10-01"


# --- 4. the revocation e-mail's reason in each language ------------------------------------------------

def test_revocation_mail_gives_the_reason_in_each_halfs_language(sqlite_ctx: AppContext) -> None:
    student_id, pesel, album = _new_student(sqlite_ctx)
    _activate(sqlite_ctx, _request(sqlite_ctx, student_id))
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, album, "pl")
    chat.press("menu:revoke")
    chat.press("revoke:new_phone")
    chat.press("confirm:yes:revoke")
    (row,) = chat.outbox("revoked")
    polish, english = open_body(sqlite_ctx.box, row).text.split("\n----------\n")
    assert "Powód: zmiana telefonu" in polish
    assert "Reason: new phone" in english and "zmiana telefonu" not in english


# --- 5. the chat code that did not arrive ------------------------------------------------------------

@pytest.mark.parametrize(("lang", "question", "expected"), [
    ("en", "The email with the code did not arrive", ("a***@student.example.edu.pl", "15 min", "Spam")),
    ("pl", "Nie dostałem maila z kodem", ("a***@student.example.edu.pl", "15 min", "SPAM")),
])
def test_at_the_code_step_a_missing_mail_is_about_the_chat_code(
        sqlite_ctx: AppContext, lang: str, question: str, expected: tuple[str, ...]) -> None:
    _, pesel, album = _new_student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in(lang)
    chat.say(pesel)
    chat.say(album)
    chat.say(question)
    for part in expected:
        assert part in chat.text, chat.text
    assert "/status" not in chat.text  # refused before binding
    assert "hour" not in chat.text and "godzin" not in chat.text  # the code lives 15 minutes
    assert "code:resend" in chat.buttons
    chat.press("code:resend")
    assert len(chat.outbox("binding-code")) == 2


def test_before_binding_an_expired_code_question_is_about_the_chat_code(sqlite_ctx: AppContext) -> None:
    _, pesel, album = _new_student(sqlite_ctx)
    chat = ChatDriver(sqlite_ctx)
    chat.start_in("en")
    chat.say(pesel)
    chat.say(album)
    chat.say("My code expired, what now?")
    assert "15 min" in chat.text and "30 days" not in chat.text and "code:resend" in chat.buttons


# --- 6. never "apply again" to an ineligible student ---------------------------------------------------

@pytest.mark.parametrize("end", ["expired", "revoked"])
def test_chat_status_of_an_ended_credential_of_an_ineligible_student(sqlite_ctx: AppContext, end: str) -> None:
    student_id, pesel, album = _new_student(sqlite_ctx)
    credential_id = _request(sqlite_ctx, student_id)
    _activate(sqlite_ctx, credential_id)
    with unit_of_work(sqlite_ctx.engine) as session:
        credential = session.get(Credential, credential_id)
        assert credential is not None
        if end == "expired":
            transition(session, credential, CredentialState.EXPIRED, actor="test", reason=EndReason.VALIDITY_ENDED,
                       now=sqlite_ctx.clock.now())
        else:
            service.revoke(sqlite_ctx, session, credential, reason=EndReason.LOST_PHONE, actor="test")
    _update_student(sqlite_ctx, student_id, status="graduated")
    chat = ChatDriver(sqlite_ctx)
    chat.identify(pesel, album, "en")
    assert "You can apply again" not in chat.text
    assert "You cannot have a mobile student ID now" in chat.text
    assert "menu:request" not in chat.buttons


# --- 7. the ELS policy never says "renew" ------------------------------------------------------------

@pytest.fixture
def els_ctx(tmp_path: Path, sqlite_url: str, clock: FixedClock) -> Iterator[AppContext]:
    engine = make_engine(sqlite_url)
    yield build_ctx(make_settings(tmp_path, database_url=sqlite_url, policy="els"), engine, clock)
    engine.dispose()


RENEW_WORDS = ("renew", "Renew", "przedłuż", "Przedłuż")


def _bound_chat(ctx: AppContext, lang: str) -> ChatDriver:
    _, pesel, album = _new_student(ctx, els_valid_until=date(2027, 9, 30))
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


# --- 8. FAQ questions the audit found unanswered ------------------------------------------------------

@pytest.fixture(scope="module")
def faq() -> Faq:
    return Faq.load(CONFIG / "faq")


@pytest.mark.parametrize(("question", "expected"), [
    ("Ukradli mi telefon", "new_phone"),
    ("Ukradziono mi telefon z mLegitymacją", "new_phone"),
    ("Mój kod QR jest już nieważny", "code_expired"),
    ("Kod aktywacyjny jest nieważny", "code_expired"),
    ("I didn't activate within 30 days, what now?", "code_expired"),
    ("I did not activate it in time", "code_expired"),
    ("The email with the QR code never came.", "email_not_arrived"),
    ("The activation e-mail never arrived", "email_not_arrived"),
    ("My surname changed, mLegitymacja shows the old one", "changed_data"),
    ("My name changed, the mobile ID shows my old name", "changed_data"),
    # No new false positives.
    ("Ukradli mi rower spod akademika", None),
    ("My surname changed, how do I update it in the dean's office records?", None),
    ("My bike was stolen and never came back", None),
    ("Mój bilet miesięczny jest już nieważny", None),
])
def test_audit_questions_reach_the_right_faq_entry(faq: Faq, question: str, expected: str | None) -> None:
    lang = faq.language(question, "pl")
    match = faq.match(question, lang)
    assert (match.entry.id if match else None) == expected
