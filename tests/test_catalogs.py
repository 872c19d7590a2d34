"""Every text exists in Polish and English, and placeholders match between them."""

from __future__ import annotations

import string

from core.app.catalog import Catalog
from core.app.settings import PROJECT_ROOT


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


# Polish greets without the name ("Dzień dobry,"): a greeting by name needs the vocative ("Ewo",
# "Janie"), which the register's name does not give reliably. English keeps "Hello {first_name},".
ENGLISH_ONLY = {"first_name"}


def test_polish_and_english_have_the_same_keys_and_placeholders() -> None:
    catalog = Catalog.load(PROJECT_ROOT / "config" / "messages")
    assert catalog.keys("pl") == catalog.keys("en")
    for key in catalog.keys("pl"):
        pl = catalog._tables["pl"][key]
        en = catalog._tables["en"][key]
        assert _fields(pl) == _fields(en) - ENGLISH_ONLY or _fields(pl) == _fields(en), key
