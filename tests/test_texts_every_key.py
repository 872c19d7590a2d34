"""Every message key of every catalog file, rendered in both languages with realistic values.

Walks the files (config/messages/<language>/*.toml), never a list of keys: a key added
tomorrow is checked too. It fails on
- a key (or plural table) in one language and not the other;
- a placeholder with no realistic value in `VALUES` below (a new placeholder needs one);
- a placeholder left unfilled after rendering, or a plural table a text names and no file has;
- a number with the wrong noun (or verb) form: "1 dni", "3 dzień", "zostało 3 dni", "1 days".
  Which form is right is not written here: Babel's CLDR plural rules choose the category of
  the number, and the forms come from CLDR's unit patterns ("{0} dzień", "{0} dni") and the
  catalog's own `[plural.NAME]` tables ("zostały {n} dni…").
Every text is rendered with each of 1, 2, 5 and 22 in its number placeholders (Polish: one, few,
many, few again), with every credential end reason, and with and without the bot's link.
Texts that differ by issuing policy are keys of their own (`intro_els`), so both policies' texts
are rendered.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from string import Formatter

import pytest
from babel import Locale
from babel.units import format_unit

from core.app.catalog import LANGUAGES, PLURAL, Catalog, plural_category
from core.app.settings import PROJECT_ROOT
from core.credentials.lifecycle import EndReason
from core.messaging.contact import Contact

MESSAGES = PROJECT_ROOT / "config" / "messages"
NUMBERS = (1, 2, 5, 22)
# CLDR units whose noun forms the rendered texts are checked against.
UNITS = ("duration-year", "duration-month", "duration-week", "duration-day", "duration-hour",
         "duration-minute", "duration-second")


class Number:
    """A placeholder that takes a count: rendered with each of NUMBERS."""


NUMBER = Number()
Value = str | Number | Callable[[str, int], str]

# Realistic values by placeholder name, as the code fills them. Callables take (language, number).
VALUES: dict[str, Value] = {
    "accept": "Akceptuję",
    "address": "ola.nowak@student.example.edu.pl",
    "channel": "e-mail",
    "chat": "-1001234567890",
    "cleared": NUMBER,
    "code": "ACDE-FGHJ-KMNP",
    "count": NUMBER,
    "resend": lambda language, n: "Wyślij nowy kod" if language == "pl" else "Send a new code",
    "send": lambda language, n: "Przekaż do biura" if language == "pl" else "Send to the help desk",
    # In the chat `{days}` is already words (core.conversation.engine.Turn.days); with a plural
    # spec (`{days:plural.days_left}`) it is the bare count.
    "days": lambda language, n: format_unit(n, "duration-day", locale=language, length="long"),
    "deadline": "15.02.2027 23:59",
    "decline": "Nie akceptuję",
    "domains": "student.example.edu.pl",
    "els_valid_until": "31.03.2027",
    "email": "ola.nowak@student.example.edu.pl",
    "error": "SMTP 421 4.7.0 Try again later",
    "first_name": "Ola",
    "holder": "Anna (1234)",
    "interval": NUMBER,
    "length": "6",
    "limit": "4000",
    "limit_mb": "25",
    "minutes": NUMBER,
    "n": "3",
    "new_valid_until": "30.09.2027",
    "no": "Nie",
    "old_valid_until": "31.03.2027",
    "oldest": "06.12.2026 10:15",
    "opens_on": "01.03.2027",
    "qr_text": "MLEG1:Wk9X3q:8fJ2",
    "size_mb": "31,5",
    "staff": "Anna (1234)",
    "student": "Ola Nowak (123456)",
    "subject": "Nie dostałam kodu",
    "summary": "1. Regulamin w skrócie.",
    "tag": "[#42]",
    "text": "Dzień dobry, nie dostałam kodu aktywacyjnego.",
    "thread": "42",
    "total": "9",
    "university": "Uniwersytet Demonstracyjny",
    "until": "06.12.2026 12:30",
    "valid_until": "31.03.2027",
    "version": "2026-10",
    "yes": "Tak",
}
# Filled from the catalog itself, per language, as the code does: the end reason's text
# (core.credentials.service), and where the student reaches us (core.messaging.contact.Contact).
REASON = "reason"
CONTACT = ("bot_chat", "bot_link", "help_desk")
CONTACTS = (Contact(help_desk="mlegitymacja@example.edu.pl", bot_link="https://t.me/UczelniaDemoBot"),
            Contact(help_desk="mlegitymacja@example.edu.pl"))

_UNFILLED = re.compile(r"\{[A-Za-z_][\w.]*(?:[:!][^{}]*)?\}")


def _catalog(directory: Path = MESSAGES) -> Catalog:
    return Catalog.load(directory)


def _fields(template: str) -> list[tuple[str, str]]:
    """(name, format spec) of every placeholder in `template`."""
    return [(name, spec or "") for _, name, spec, _ in Formatter().parse(template) if name is not None]


def _renderings(catalog: Catalog, language: str, key: str) -> Iterator[str]:
    """`key` rendered with every combination its placeholders call for."""
    fields = _fields(catalog.template(language, key))
    names = {name for name, _ in fields}
    unknown = names - VALUES.keys() - {REASON, *CONTACT}
    assert not unknown, f"{language}:{key}: no realistic value for {sorted(unknown)}: add it to VALUES"
    specs = {name: spec for name, spec in fields if spec}
    numbered = any(isinstance(VALUES.get(name), Number) or callable(VALUES.get(name)) or name in specs
                   for name in names)
    reasons = [catalog.text(language, f"end_reason.{r.value}") for r in EndReason] if REASON in names else [""]
    contacts = CONTACTS if names & set(CONTACT) else CONTACTS[:1]
    for number, reason, contact in itertools.product(NUMBERS if numbered else NUMBERS[:1], reasons, contacts):
        params: dict[str, object] = {}
        for name in names - {REASON, *CONTACT}:
            value = VALUES[name]
            if name in specs:
                params[name] = number  # a plural spec takes the count itself
            elif isinstance(value, Number):
                params[name] = str(number)
            elif callable(value):
                params[name] = value(language, number)
            else:
                params[name] = value
        if REASON in names:
            params[REASON] = reason
        params.update({k: v for k, v in contact.params(catalog, language).items() if k in names})
        yield catalog.text(language, key, **params)


# --- noun forms ------------------------------------------------------------------------------------

def _integer_categories(language: str) -> set[str]:
    # Polish "other" is for fractions only: "1,5 dnia"; a count never takes it.
    return {plural_category(language, n) for n in range(0, 1000)}


def _form_sets(catalog: Catalog, language: str) -> list[dict[str, str]]:
    """Each word's forms by plural category, `{n}` for the number: CLDR's units and the catalog's tables."""
    locale = Locale.parse(language)
    categories = _integer_categories(language)
    sets = []
    for unit in UNITS:
        patterns = locale._data["unit_patterns"][unit]["long"]
        sets.append({c: str(patterns[c]).replace("{0}", "{n}") for c in categories if c in patterns})
    for key in catalog.plural_keys(language):
        forms = catalog.plural_forms(language, key)
        sets.append({c: forms[c] for c in categories if c in forms})
    return sets


def _pattern(form: str, number: str = r"\d+") -> re.Pattern[str]:
    before, after = form.split("{n}", 1)
    return re.compile(rf"(?<![\w.,]){re.escape(before)}(?P<n>{number})(?![\d.,]\d){re.escape(after)}(?!\w)")


def wrong_numerals(text: str, language: str, sets: list[dict[str, str]]) -> list[str]:
    """Numbers in `text` followed by a form their CLDR category does not take ("1 dni").

    CLDR's unit patterns are the nominative (a count as subject or object: "masz 2 minuty"); a
    count in another case ("w ciągu 2 minut") reads as wrong here: word it without the digit, as
    the texts do ("w ciągu minuty lub dwóch"), or give the phrase a `[plural.NAME]` table.
    """
    wrong = []
    for forms in sets:
        for form in set(forms.values()):
            for match in _pattern(form).finditer(text):
                number = int(match["n"])
                category = plural_category(language, number)
                if match[0] != forms.get(category, "").format(n=number):
                    wrong.append(match[0])
    return wrong


# --- the tests -------------------------------------------------------------------------------------

def test_every_key_and_plural_table_is_in_both_languages() -> None:
    catalog = _catalog()
    pl, en = catalog.keys("pl"), catalog.keys("en")
    assert not pl - en, f"only in Polish: {sorted(pl - en)}"
    assert not en - pl, f"only in English: {sorted(en - pl)}"
    assert catalog.plural_keys("pl") == catalog.plural_keys("en")


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_key_renders_with_every_placeholder_filled(language: str) -> None:
    catalog = _catalog()
    problems = []
    for key in sorted(catalog.keys(language)):
        for text in _renderings(catalog, language, key):
            if left := _UNFILLED.findall(text):
                problems.append(f"{key}: unfilled {left}")
                break
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("language", LANGUAGES)
def test_numbers_take_the_noun_form_cldr_chooses(language: str) -> None:
    catalog = _catalog()
    sets = _form_sets(catalog, language)
    problems = []
    for key in sorted(catalog.keys(language)):
        for text in _renderings(catalog, language, key):
            if wrong := wrong_numerals(text, language, sets):
                problems.append(f"{key}: {wrong}")
                break
    assert not problems, "\n".join(problems)


def test_plural_tables_render_their_own_category() -> None:
    catalog = _catalog()
    for language in LANGUAGES:
        for key in catalog.plural_keys(language):
            for n in NUMBERS:
                assert catalog.plural(language, key, n) == catalog.plural_forms(language, key)[
                    plural_category(language, n)].format(n=n)


def test_polish_days_read_as_a_native_speaker_expects() -> None:
    # The examples of issue 19, through the catalog and Babel (a check of the wiring, not of CLDR).
    catalog = _catalog()
    said = [catalog.plural("pl", f"{PLURAL}.days_left", n) for n in (1, 3, 5, 22)]
    assert said[0].startswith("został 1 dzień") and said[1].startswith("zostały 3 dni")
    assert said[2].startswith("zostało 5 dni") and said[3].startswith("zostały 22 dni")
    assert catalog.plural("en", f"{PLURAL}.days_left", 14) == "14 days left, including today"


def test_the_chat_codes_length_takes_its_noun_form() -> None:
    # "Kod ma {length} cyfr" was right for 6 and wrong for 4 ("4 cyfry") or 1 ("1 cyfrę").
    catalog = _catalog()
    said = {n: catalog.text("pl", "identify.code_format", length=n).split(":")[0] for n in (1, 4, 6, 22)}
    assert said == {1: "Kod ma 1 cyfrę", 4: "Kod ma 4 cyfry", 6: "Kod ma 6 cyfr", 22: "Kod ma 22 cyfry"}
    assert catalog.text("en", "identify.code_format", length=1).startswith("The code has 1 digit:")
    assert catalog.text("en", "identify.code_format", length=6).startswith("The code has 6 digits:")


def test_a_lifted_locks_attempts_take_their_noun_form() -> None:
    # "{cleared} nieudanych prób usuniętych" was right only for 0 and 5-21 ("1 nieudanych prób").
    catalog = _catalog()
    said = {n: catalog.text("pl", "web.locked.notice.unlocked", cleared=n) for n in (1, 2, 5, 22)}
    assert said == {1: "Blokada zdjęta (1 nieudana próba usunięta).", 2: "Blokada zdjęta (2 nieudane próby usunięte).",
                    5: "Blokada zdjęta (5 nieudanych prób usuniętych).",
                    22: "Blokada zdjęta (22 nieudane próby usunięte)."}
    assert catalog.text("en", "web.locked.notice.unlocked", cleared=1) == "Lock lifted (1 failed attempt cleared)."
    assert catalog.text("en", "web.locked.notice.unlocked", cleared="2") == "Lock lifted (2 failed attempts cleared)."


def test_polish_e_mails_greet_without_a_name() -> None:
    # "Dzień dobry, Ola" would need the vocative ("Olu"), which the register does not give.
    catalog = _catalog()
    named = [key for key in catalog.keys("pl")
             if re.search(r"Dzień dobry,\s*\{first_name\}", catalog.template("pl", key))]
    assert not named


def test_one_dash_style_an_en_dash_with_spaces() -> None:
    found = []
    for language in LANGUAGES:
        for path in sorted((MESSAGES / language).glob("*.toml")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if "—" in line or re.search(r"\w - \w", line):
                    found.append(f"{language}/{path.name}:{number}: {line.strip()[:80]}")
    assert not found, "\n".join(found)


# --- the checks catch what they are for ------------------------------------------------------------

def test_the_numeral_check_catches_wrong_forms() -> None:
    catalog = _catalog()
    pl, en = _form_sets(catalog, "pl"), _form_sets(catalog, "en")
    assert wrong_numerals("zostało 1 dni", "pl", pl)
    assert wrong_numerals("Za 3 dzień", "pl", pl)
    assert wrong_numerals("(zostało 3 dni łącznie z dzisiejszym)", "pl", pl)
    assert wrong_numerals("ważny 5 minuty", "pl", pl)
    assert wrong_numerals("1 days left", "en", en)
    assert not wrong_numerals("Na aktywację masz 30 dni, został 1 dzień, 22 dni, 1,5 dnia", "pl", pl)
    assert not wrong_numerals("do 15.01.2027 (zostały 3 dni łącznie z dzisiejszym), 5 minut", "pl", pl)
    assert not wrong_numerals("1 day left: today; 30 days", "en", en)


def test_a_plural_table_missing_a_form_of_its_language_does_not_load(tmp_path: Path) -> None:
    for language in LANGUAGES:
        (tmp_path / language).mkdir()
        (tmp_path / language / "a.toml").write_text('[plural.days]\none = "{n} day"\nother = "{n} days"\n')
    # English needs one and other; Polish also few and many ("2 dni", "5 dni").
    with pytest.raises(ValueError, match="missing few, many"):
        _catalog(tmp_path)
