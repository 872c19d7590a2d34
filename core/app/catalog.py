"""Message catalogs: every text a student reads, in Polish and English, from `config/messages/`.

Each language is a folder of TOML files (`config/messages/pl/*.toml`); the files are one
namespace, split only so that each part of the product keeps its texts in its own file. An
installation's file of the same name (MLEG_CONFIG_DIR) replaces a shipped one.

Numbers take the noun (and verb) form the language's CLDR plural rules choose, through Babel:
a `[plural.NAME]` table gives one form per plural category (Polish: one, few, many, other;
English: one, other) and a text asks for it with a format spec, `{days:plural.days_left}`,
so "został 1 dzień", "zostały 3 dni", "zostało 5 dni" come from one placeholder. Hand-written
"{days} dni" is wrong for 1 (and "{days} dzień" for everything else).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from string import Formatter
from typing import Any

from babel import Locale
from babel.units import format_unit

from core.app.config_files import Layers, glob

__all__ = ["LANGUAGES", "PLURAL", "Catalog", "days_text", "plural_category"]

LANGUAGES = ("pl", "en")
# The top-level table of plural forms, and the prefix of a format spec that uses one.
PLURAL = "plural"


@cache
def _rule(language: str) -> Any:
    return Locale.parse(language).plural_form


def plural_category(language: str, number: int) -> str:
    """The CLDR plural category of `number` in `language` (Babel): 1 -> one, 3 -> few, 5 -> many in Polish."""
    return str(_rule(language)(number))


def days_text(count: int, language: str) -> str:
    """`count` days in words with the language's plural form (CLDR, through Babel): "1 dzień",
    "2 dni", "5 dni", "22 dni", "1 day", "30 days". The chat's `{days}` and the FAQ's windows."""
    return format_unit(count, "duration-day", locale=language, length="long")


def _categories(language: str) -> set[str]:
    # Babel's rule lists the categories it has rules for; "other" is implicit.
    return {*_rule(language).tags, "other"}


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class _Formatter(Formatter):
    """str.format, plus `{n:plural.NAME}`: `n` with the form its plural category takes."""

    def __init__(self, catalog: Catalog, language: str) -> None:
        self._catalog, self._language = catalog, language

    def format_field(self, value: Any, format_spec: str) -> Any:
        if format_spec.startswith(PLURAL + "."):
            try:
                number = int(value)
            except (TypeError, ValueError):
                return value  # an unfilled "{days}" stays visible, like any other missing placeholder
            return self._catalog.plural(self._language, format_spec, number)
        return super().format_field(value, format_spec)


class Catalog:
    """Looks up `key` in a language's catalog and fills `{placeholders}`."""

    def __init__(
        self,
        tables: Mapping[str, Mapping[str, str]],
        plurals: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
    ) -> None:
        self._tables = tables
        self._plurals = plurals or {language: {} for language in tables}

    @classmethod
    def load(cls, directory: Layers) -> Catalog:
        """`directory`: the messages folder, or such folders searched in order (see core.app.config_files)."""
        layers = [directory] if isinstance(directory, Path) else directory
        tables: dict[str, dict[str, str]] = {}
        plurals: dict[str, dict[str, dict[str, str]]] = {}
        for language in LANGUAGES:
            tables[language], plurals[language] = {}, {}
            for path in glob([layer / language for layer in layers], "*.toml"):
                with path.open("rb") as handle:
                    tree = tomllib.load(handle)
                forms = _plural_tables(tree.pop(PLURAL, {}), language, path)
                part = _flatten(tree)
                clash = (part.keys() & tables[language].keys()) | (forms.keys() & plurals[language].keys())
                if clash:
                    raise ValueError(f"{path}: keys defined twice: {', '.join(sorted(clash))}")
                tables[language].update(part)
                plurals[language].update(forms)
        return cls(tables, plurals)

    def has(self, language: str, key: str) -> bool:
        return key in self._tables.get(language, {})

    def text(self, language: str, key: str, **params: Any) -> str:
        if language not in self._tables:
            language = "pl"
        template = self._tables[language].get(key)
        if template is None:
            language, template = "en", self._tables["en"].get(key)
        if template is None:
            raise KeyError(f"message {key!r} is missing from the {language} catalog")
        return _Formatter(self, language).vformat(template, (), _Missing(params)).strip("\n")

    def plural(self, language: str, key: str, number: int) -> str:
        """`number` in the form of plural table `key` ("plural.days") its CLDR category takes."""
        forms = self._plurals.get(language, {}).get(key)
        if forms is None:
            raise KeyError(f"plural table {key!r} is missing from the {language} catalog")
        category = plural_category(language, number)
        return forms.get(category, forms["other"]).format(n=number)

    def keys(self, language: str) -> set[str]:
        return set(self._tables[language])

    def template(self, language: str, key: str) -> str:
        """The text of `key` as written, placeholders unfilled (for checks over the catalogs)."""
        return self._tables[language][key]

    def plural_keys(self, language: str) -> set[str]:
        return set(self._plurals.get(language, {}))

    def plural_forms(self, language: str, key: str) -> dict[str, str]:
        """A plural table's forms by CLDR category, `{n}` unfilled."""
        return dict(self._plurals[language][key])


def _plural_tables(tree: Mapping[str, Any], language: str, path: Path) -> dict[str, dict[str, str]]:
    """`[plural.NAME]` tables: each must give every category the language's rules can choose."""
    needed = _categories(language)
    if not isinstance(tree, Mapping):
        raise ValueError(f"{path}: `{PLURAL}` must be a table of plural tables ([{PLURAL}.NAME])")
    tables: dict[str, dict[str, str]] = {}
    for name, forms in tree.items():
        key = f"{PLURAL}.{name}"
        if not isinstance(forms, Mapping) or any(isinstance(v, Mapping) for v in forms.values()):
            raise ValueError(f"{path}: {key} must be a table of forms ({', '.join(sorted(needed))})")
        given = set(forms)
        if given != needed:
            missing, extra = needed - given, given - needed
            raise ValueError(
                f"{path}: {key} needs exactly the plural forms {', '.join(sorted(needed))} for {language!r}"
                + (f"; missing {', '.join(sorted(missing))}" if missing else "")
                + (f"; not a {language!r} category: {', '.join(sorted(extra))}" if extra else ""))
        tables[key] = {category: str(text) for category, text in forms.items()}
    return tables


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = str(value)
    return flat
