"""core.understanding: the labelled set, the accuracy floor, the catalog, and `mleg understand`.

The figures themselves are bench.understanding's (held-out accuracy, precision, CPU); this file keeps
accuracy above a floor so that a catalog edit that breaks understanding fails here.
"""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path

import pytest

from bench.understanding import evaluate, load_set
from core.support.faq import Faq
from core.understanding import INTENTS, IntentCatalog, load_understanding
from core.understanding.text import Normaliser
from tests.cli_helpers import cli_environment, run

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "tests" / "data" / "understanding_labelled.csv"
CATALOG = ROOT / "config" / "intents.toml"
# Floors under the bench's targets (0.92, 0.98): the test guards against breaking, the bench measures.
ACCURACY_FLOOR = 0.90
ACTION_PRECISION_FLOOR = 0.95


def _rows() -> list[dict[str, str]]:
    with LABELLED.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_labelled_set_is_big_sourced_and_its_held_out_part_unseen_by_the_catalog() -> None:
    rows = _rows()
    assert len(rows) >= 400
    assert {r["language"] for r in rows} == {"pl", "en"} and {r["intent"] for r in rows} == set(INTENTS)
    assert sum(r["source"].startswith("https://") for r in rows) * 2 >= len(rows)
    catalog = IntentCatalog.load(CATALOG)
    normaliser = Normaliser(catalog.shorthand, catalog.emoji)
    seen = {normaliser.normalise(text) for text, _, _ in catalog.examples()}
    for row in rows:
        assert (normaliser.normalise(row["text"]) in seen) == (row["part"] == "catalog"), row["text"]
    assert sum(r["part"] == "heldout" for r in rows) >= 400


def test_held_out_accuracy_stays_above_the_floor() -> None:
    result = evaluate(load_understanding(CATALOG), load_set(LABELLED))
    assert result["accuracy"] >= ACCURACY_FLOOR
    assert result["action_precision"] >= ACTION_PRECISION_FLOOR


@pytest.mark.parametrize(("text", "intent", "reason"), [
    ("zgubilem telefn 📵", "revoke_lost_phone", "lost_phone"),
    ("I lost my phone, what now?", "revoke_lost_phone", "lost_phone"),
    ("kupilem nowy tel", "new_phone", "new_phone"),
])
def test_the_lost_phone_carries_its_reason(text: str, intent: str, reason: str) -> None:
    understood = load_understanding(CATALOG).understand(text)
    assert (understood.intent, understood.slot("reason"), understood.clear) == (intent, reason, True)


def test_every_faq_entry_the_catalog_names_exists_in_both_languages() -> None:
    faq = Faq.load(ROOT / "config" / "faq")
    for entry in load_understanding(CATALOG).faq_entries():
        assert faq.get("pl", entry) is not None and faq.get("en", entry) is not None, entry


def test_every_intent_has_examples_in_both_languages() -> None:
    data = tomllib.loads(CATALOG.read_text(encoding="utf-8"))
    catalog = IntentCatalog.parse(data)
    for intent in INTENTS:
        for language in ("pl", "en"):
            assert any(t.examples[language] for t in catalog.topics if t.intent == intent), (intent, language)
    with pytest.raises(ValueError, match="not one of the intents"):
        IntentCatalog.parse({**data, "intent": {**data["intent"], "teleport": {"pl": ["x"]}}})


@pytest.mark.process
def test_mleg_understand_prints_the_intent_and_the_faq_entry(tmp_path: Path, sqlite_url: str) -> None:
    env = cli_environment(tmp_path, sqlite_url)
    done = run(["understand", "--json", "ile kosztuje mLegitymacja?"], env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"intent": "about", "confidence": json.loads(done.stdout)["confidence"],
                                       "language": "pl", "faq_entry": "cost"}
    plain = run(["understand", "--lang", "en", "zgubiłem telefon"], env)
    assert plain.returncode == 0 and plain.stdout.startswith("revoke_lost_phone\t") and "language en" in plain.stdout


@pytest.mark.process
def test_mleg_understand_reads_json_lines_from_standard_input(tmp_path: Path, sqlite_url: str) -> None:
    import subprocess
    import sys

    env = cli_environment(tmp_path, sqlite_url)
    done = subprocess.run([sys.executable, "-m", "core.cli", "understand", "--json"], env=env, cwd=ROOT,
                          input="wniosek\nhello\n\njaka jest pogoda\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["intent"] for r in results] == ["apply", "greeting", "out_of_scope"]
    assert all(set(r) == {"intent", "confidence", "language", "faq_entry"} for r in results)
    assert results[2]["faq_entry"] is None
