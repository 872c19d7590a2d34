"""Message catalogs: every text a student reads, in Polish and English, from `config/messages/`.

Each language is a folder of TOML files (`config/messages/pl/*.toml`); the files are one
namespace, split only so that each part of the product keeps its texts in its own file. An
installation's file of the same name (MLEG_CONFIG_DIR) replaces a shipped one.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from string import Formatter
from typing import Any

from core.app.config_files import Layers, glob

__all__ = ["LANGUAGES", "Catalog"]

LANGUAGES = ("pl", "en")


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Catalog:
    """Looks up `key` in a language's catalog and fills `{placeholders}`."""

    def __init__(self, tables: Mapping[str, Mapping[str, str]]) -> None:
        self._tables = tables

    @classmethod
    def load(cls, directory: Layers) -> Catalog:
        """`directory`: the messages folder, or such folders searched in order (see core.app.config_files)."""
        layers = [directory] if isinstance(directory, Path) else directory
        tables: dict[str, dict[str, str]] = {}
        for language in LANGUAGES:
            tables[language] = {}
            for path in glob([layer / language for layer in layers], "*.toml"):
                with path.open("rb") as handle:
                    part = _flatten(tomllib.load(handle))
                clash = part.keys() & tables[language].keys()
                if clash:
                    raise ValueError(f"{path}: keys defined twice: {', '.join(sorted(clash))}")
                tables[language].update(part)
        return cls(tables)

    def has(self, language: str, key: str) -> bool:
        return key in self._tables.get(language, {})

    def text(self, language: str, key: str, **params: Any) -> str:
        table = self._tables.get(language) or self._tables["pl"]
        template = table.get(key)
        if template is None:
            template = self._tables["en"].get(key)
        if template is None:
            raise KeyError(f"message {key!r} is missing from the {language} catalog")
        return Formatter().vformat(template, (), _Missing(params)).strip("\n")

    def keys(self, language: str) -> set[str]:
        return set(self._tables[language])


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = str(value)
    return flat
