"""What the chat says, checked as text: neutral Polish, one dash style, the plastic card never a bare
"legitymacja", the issuing policy's own wording of the terms, help and FAQ, and day counts in the
language's plural forms (issue 19)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from core.app.catalog import LANGUAGES, Catalog, days_text
from core.app.clock import FixedClock
from core.app.context import AppContext
from core.app.settings import PROJECT_ROOT
from core.conversation.events import Event
from core.conversation.state import ConversationState
from core.conversation.terms import load_terms
from core.conversation.turn import EngineConfig, Turn
from core.storage.db import make_engine
from core.support.faq import Faq
from tests.chat_driver import ChatDriver
from tests.factories import build_ctx, make_settings

CONFIG = PROJECT_ROOT / "config"
# The chat's own files (config/messages/*/{chat,bot}.toml, the FAQ, the terms); the e-mail texts
# have tests of their own.
CHAT_FILES = ("chat.toml", "bot.toml")


def _values(tree: dict[str, object], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _values(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    yield from _values(item, f"{prefix}{key}[{item.get('id', '')}].")
        else:
            yield f"{prefix}{key}", str(value)


def _texts(language: str) -> list[tuple[str, str]]:
    """(where, text) of every chat, bot, FAQ and terms text in `language`."""
    found: list[tuple[str, str]] = []
    for name in CHAT_FILES:
        with (CONFIG / "messages" / language / name).open("rb") as handle:
            found += [(f"{name}:{key}", text) for key, text in _values(tomllib.load(handle))]
    with (CONFIG / "faq" / f"{language}.toml").open("rb") as handle:
        found += [(f"faq:{key}", text) for key, text in _values(tomllib.load(handle))]
    found += [(path.name, path.read_text(encoding="utf-8")) for path in (CONFIG / "terms").glob(f"*.{language}.md")]
    return found


# First-person past forms say the bot's gender ("wysłałem", "zrozumiałam", "mógłbym"); second-person
# ones guess the student's ("zgubiłeś"). The bot speaks neutrally: "nie rozumiem", "kod został wysłany".
GENDERED = re.compile(r"\b\w+(?:łem|łam|łbym|łabym|łeś|łaś|łbyś|łabyś)\b", re.IGNORECASE)
# Nouns that end so without being verbs ("z działem", "kołem").
NOT_VERBS = {"działem", "kołem", "czołem", "stołem", "dziełem", "popiołem", "aniołem", "kościołem"}


def test_gendered_past_forms_are_caught() -> None:
    """The check itself: it would fail on the forms the chat used to say."""
    said = "Wysłałem kod. Nie zrozumiałam. Rozpoznałem Cię. Mógłbym pomóc. Zgubiłeś telefon? Odłączyłem czat."
    assert len(GENDERED.findall(said)) == 6
    neutral = "Kod został wysłany. Nie rozumiem. Czat został odłączony. Pomogę."
    assert not GENDERED.findall(neutral)


def test_polish_chat_texts_speak_neutrally() -> None:
    found = [(where, word) for where, text in _texts("pl")
             for word in GENDERED.findall(text) if word.lower() not in NOT_VERBS]
    assert not found, found


def test_polish_chat_texts_are_not_gendered_either_way() -> None:
    """"Nie jestem pewien" / "jesteś rozpoznany": adjectives and participles say a gender too."""
    found = [(where, phrase) for where, text in _texts("pl")
             for phrase in re.findall(r"\b(?:jestem|jesteś) \w+(?:ny|na|en|na)\b", text, re.IGNORECASE)]
    assert not found, found


@pytest.mark.parametrize("language", ["pl", "en"])
def test_one_dash_style_in_prose(language: str) -> None:
    """The en dash with spaces (" – "): never the em dash, never a hyphen between spaces."""
    found = [(where, text[max(0, i - 20):i + 20]) for where, text in _texts(language)
             for i in [m.start() for m in re.finditer(r"—| - ", text)]]
    assert not found, found


def test_polish_never_leaves_the_plastic_card_and_the_mobile_id_ambiguous() -> None:
    """A bare "legitymacja" could be the ELS card: it is "mLegitymacja", or named as the card
    ("legitymacja ELS", "plastikowa legitymacja"), or the app's label "Legitymacja Studencka"."""
    found = []
    for where, text in _texts("pl"):
        for match in re.finditer(r"(?<![mM])\b[lL]egitymacj\w*", text):
            around = text[max(0, match.start() - 25):match.end() + 30]
            if not re.search(r"ELS|plastikow|Legitymacja Studencka|w aplikacji", around):
                found.append((where, around))
    assert not found, found


def test_english_names_the_credential_one_way() -> None:
    """"mobile student ID"; "mLegitymacja" only in brackets after it, in names (the service, the
    chat code's e-mail) and quoted app messages."""
    bare = re.compile(r"(?<!\()\bmLegitymacja\b(?! (?:chat|service|nie istnieje|does not exist))")
    found = [(where, text) for where, text in _texts("en")
             if not where.startswith(("chat.toml:staff.", "bot.toml:bot.staff")) and bare.search(text)]
    assert not found, found


# --- per-policy wording -----------------------------------------------------------------------------

# Renewal promised (not "się nie przedłuża", not the ELS card's extension) or art. 74 ust. 4b cited.
ELS_PROMISES = {"pl": re.compile(r"(?<![nN]ie )\bprzedłuż\w*\b(?!\s+(?:Twoj\w+\s+)?legitymacj\w* ELS)|74 ust\. 4b"),
                "en": re.compile(r"(?<!isn't )(?<!not )\brenew|74\(4b\)")}


@pytest.mark.parametrize("language", ["pl", "en"])
def test_els_terms_help_and_faq_promise_no_renewal_and_cite_no_art_74(language: str) -> None:
    terms = load_terms(CONFIG / "terms")
    faq = Faq.load(CONFIG / "faq")
    catalog = Catalog.load(CONFIG / "messages")
    texts = {
        "terms": terms.full_for(language, "els"),
        "help.before_binding_els": catalog.text(language, "help.before_binding_els"),
        "activation.done_els": catalog.text(language, "activation.done_els"),
        **{f"faq:{entry.id}": entry.answer_for("els") for entry in faq.entries(language)
           if entry.id in ("mobywatel_app", "renewal", "not_eligible")},
    }
    promises = {where: ELS_PROMISES[language].findall(text) for where, text in texts.items()}
    assert not any(promises.values()), promises
    # ... while the stand-alone policy's keep them.
    assert ELS_PROMISES[language].search(terms.full_for(language, "standalone"))
    assert ELS_PROMISES[language].search(catalog.text(language, "help.before_binding"))


def test_a_policy_variant_of_the_terms_counts_only_with_both_languages(tmp_path: Path) -> None:
    for name, text in (("2025-10-01.pl.md", "ogólny\n---\n§1 pl"), ("2025-10-01.en.md", "plain\n---\n§1 en"),
                       ("2025-10-01.els.pl.md", "ELS pl\n---\n§1 ELS"), ("2025-10-01.els.en.md", "ELS en\n---\n§1"),
                       ("2025-10-01.standalone.pl.md", "only Polish")):
        (tmp_path / name).write_text(text, encoding="utf-8")
    terms = load_terms(tmp_path, today=date(2026, 1, 1))
    assert terms.version == "2025-10-01"  # a variant is no version of its own
    assert terms.summary_for("pl", "els") == "ELS pl" and terms.full_for("en", "els") == "ELS en\n\n§1"
    assert terms.summary_for("pl", "standalone") == "ogólny"  # no English beside it: the plain text
    assert terms.summary_for("en", "standalone") == "plain"


@pytest.fixture
def els_ctx(tmp_path: Path, sqlite_url: str, clock: FixedClock) -> Iterator[AppContext]:
    engine = make_engine(sqlite_url)
    yield build_ctx(make_settings(tmp_path, database_url=sqlite_url, policy="els"), engine, clock)
    engine.dispose()


def test_the_chat_shows_the_els_terms_and_help_under_the_els_policy(els_ctx: AppContext) -> None:
    chat = ChatDriver(els_ctx)
    chat.say("/start")
    chat.press("lang:pl")
    shown = chat.replies[-1].text
    assert shown.count("Regulamin usługi mLegitymacja") == 1  # the heading once, from the catalog
    assert "mLegitymacji się nie przedłuża" in shown and "przedłużyć ją" not in shown
    chat.press("terms:full")
    assert "74 ust. 4b" not in chat.text and "nie dłużej niż legitymacja ELS" in chat.text
    assert chat.text.count("Regulamin usługi mLegitymacja") == 2  # above the full text, then the prompt
    chat.press("terms:accept")
    chat.say("/help")
    assert "numer legitymacji ELS" in chat.text and "przedłużeniu" not in chat.text


# --- numbers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("language", "count", "said"), [
    ("pl", 1, "1 dzień"), ("pl", 2, "2 dni"), ("pl", 5, "5 dni"), ("pl", 22, "22 dni"),
    ("en", 1, "1 day"), ("en", 14, "14 days"),
])
def test_day_counts_take_the_plural_form_of_the_language(language: str, count: int, said: str) -> None:
    assert days_text(count, language) == said


def test_any_chat_text_can_be_worded_per_policy_in_a_catalog_file(tmp_path: Path) -> None:
    """`<key>_<policy>` in a catalog file is preferred under that policy, for every key the chat says."""
    for language in LANGUAGES:
        (tmp_path / language).mkdir()
        (tmp_path / language / "own.toml").write_text('[status]\nnone = "plain"\nnone_els = "ELS"\n', encoding="utf-8")
    catalog = Catalog.load(tmp_path)
    event = Event.text_message("console", "account", "hello")
    for policy, said in (("els", "ELS"), ("standalone", "plain")):
        config = EngineConfig(catalog=catalog, faq=None, terms=None, policy=policy,  # type: ignore[arg-type]
                              pesel_hasher=str)
        turn = Turn(config, ConversationState(language="en"), event, datetime(2026, 10, 5, tzinfo=UTC))
        assert turn.t("status.none") == said
