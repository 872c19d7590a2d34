"""Benchmark U1: how well and how fast students' text is understood (core.understanding).

    .venv/bin/python -m bench.understanding [--set tests/data/understanding_labelled.csv] [--all] [--compare]

On the labelled set's held-out part (utterances the catalog's examples never saw; `--all` adds the
rest): top-1 accuracy, precision and recall per intent, the confusions, and the CPU time per
message (process time of `understand`, median and 95th percentile, after one warm-up pass).
An utterance the understanding is not sure of counts as `out_of_scope`: in the chat it is asked
back, in the mailbox a person answers. Targets: accuracy >= 0.92, precision >= 0.98 for the
action intents, median CPU <= 1 ms.

`--compare` measures the candidates the defaults were chosen from: without rapidfuzz's typo
correction, with simplemma lemmas, other character n-gram ranges and regularisation, and for the
language, lingua-language-detector when it is installed (it is not a dependency).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import statistics
import time
from collections import Counter
from pathlib import Path

from core.understanding import ACTION_INTENTS, INTENTS, IntentCatalog, Understanding, load_understanding
from core.understanding.model import Options

ROOT = Path(__file__).resolve().parents[1]
# "heldout": never catalog examples; "fresh": also added after the defaults were chosen (never tuned on).
HELD_OUT = ("heldout", "fresh")
DEFAULT_SET = ROOT / "tests" / "data" / "understanding_labelled.csv"
CATALOG = ROOT / "config" / "intents.toml"


def load_set(path: Path, *, everything: bool = False) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows if everything else [r for r in rows if r["part"] in HELD_OUT]


def evaluate(understanding: Understanding, rows: list[dict[str, str]]) -> dict[str, object]:
    """Predictions, accuracy, per-intent precision/recall, confusions and CPU per message."""
    for row in rows:  # warm-up: caches and first-call costs are not the steady state
        understanding.understand(row["text"])
    predicted: list[str] = []  # the decided intent: out_of_scope when not clear (asked back / a person)
    top1: list[str] = []  # the likeliest intent
    cpu: list[float] = []
    language_right = 0
    for row in rows:
        start = time.process_time()
        result = understanding.understand(row["text"])
        cpu.append(time.process_time() - start)
        predicted.append(result.intent)
        likeliest = result.candidates[0][0] if result.candidates else result.intent
        # An utterance about nothing we do is right when nothing else is clearly taken from it.
        top1.append(result.intent if row["intent"] == "out_of_scope" or not result.candidates else likeliest)
        language_right += result.language == row["language"]
    truth = [r["intent"] for r in rows]
    right = sum(p == t for p, t in zip(top1, truth, strict=True))
    decided_right = sum(p == t for p, t in zip(predicted, truth, strict=True))
    asked_back = sum(p == "out_of_scope" != t for p, t in zip(predicted, truth, strict=True))
    per_intent: dict[str, tuple[float, float, int]] = {}
    for intent in INTENTS:
        tp = sum(p == t == intent for p, t in zip(top1, truth, strict=True))
        said = sum(p == intent for p in top1)
        real = sum(t == intent for t in truth)
        per_intent[intent] = (tp / said if said else 1.0, tp / real if real else 1.0, real)
    actions_said = [(p, t) for p, t in zip(predicted, truth, strict=True) if p in ACTION_INTENTS]
    action_precision = (sum(p == t for p, t in actions_said) / len(actions_said)) if actions_said else 1.0
    confusions = Counter((t, p) for p, t in zip(top1, truth, strict=True) if p != t)
    wrong = [(r["text"], r["intent"], p) for r, p in zip(rows, top1, strict=True) if p != r["intent"]]
    return {
        "n": len(rows), "accuracy": right / len(rows) if rows else 0.0, "action_precision": action_precision,
        "decided_accuracy": decided_right / len(rows) if rows else 0.0,
        "asked_back": asked_back / len(rows) if rows else 0.0,
        "language_accuracy": language_right / len(rows) if rows else 0.0, "per_intent": per_intent,
        "confusions": confusions, "wrong": wrong,
        "cpu_median_ms": statistics.median(cpu) * 1000, "cpu_p95_ms": sorted(cpu)[int(len(cpu) * 0.95)] * 1000,
    }


VARIANTS: list[tuple[str, Options]] = [
    ("default: char 2-5 + words, C=80", Options()),
    ("with rapidfuzz typo correction", Options(typos=True)),
    ("with simplemma lemmas as word features", Options(lemmas=True)),
    ("char n-grams 1-4", Options(char_ngrams=(1, 4))),
    ("char n-grams 3-6", Options(char_ngrams=(3, 6))),
    ("C=20", Options(c=20.0)),
    ("C=200", Options(c=200.0)),
]


def compare(catalog_path: Path, rows: list[dict[str, str]]) -> None:
    catalog = IntentCatalog.load(catalog_path)
    print(f"{'variant':<52}{'accuracy':>9}{'action P':>9}{'CPU ms':>8}{'train s':>8}")
    for name, options in VARIANTS:
        if (options.typos and importlib.util.find_spec("rapidfuzz") is None) or (
                options.lemmas and importlib.util.find_spec("simplemma") is None):
            print(f"{name:<52} (not installed: pip install rapidfuzz simplemma)")
            continue
        start = time.process_time()
        understanding = Understanding(catalog, options)
        trained = time.process_time() - start
        result = evaluate(understanding, rows)
        print(f"{name:<52}{result['accuracy']:>9.3f}{result['action_precision']:>9.3f}"
              f"{result['cpu_median_ms']:>8.3f}{trained:>8.2f}")
    try:
        from lingua import Language, LanguageDetectorBuilder
    except ImportError:
        print("language: lingua-language-detector not installed, not compared")
        return
    detector = LanguageDetectorBuilder.from_languages(Language.POLISH, Language.ENGLISH).build()
    right = sum((detector.detect_language_of(r["text"]) or Language.POLISH).iso_code_639_1.name.lower()
                == r["language"] for r in rows)
    print(f"language by lingua-language-detector: {right / len(rows):.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=DEFAULT_SET)
    parser.add_argument("--catalog", type=Path, default=CATALOG)
    parser.add_argument("--all", action="store_true", help="the whole set, not only its held-out part")
    parser.add_argument("--wrong", action="store_true", help="list every utterance taken wrongly")
    parser.add_argument("--compare", action="store_true", help="measure the candidate variants too")
    args, _ = parser.parse_known_args(argv)
    if args.compare:
        compare(args.catalog, load_set(args.set, everything=args.all))
        print()
    start = time.process_time()
    understanding = load_understanding(args.catalog)
    trained = time.process_time() - start
    result = evaluate(understanding, load_set(args.set, everything=args.all))
    print(f"utterances: {result['n']} ({'all' if args.all else 'held-out'}); training at start-up: "
          f"{trained:.2f} s CPU")
    print(f"top-1 accuracy (the likeliest intent): {result['accuracy']:.3f} (target >= 0.92)")
    print(f"action-intent precision (acted on clearly): {result['action_precision']:.3f} (target >= 0.98)")
    print(f"decided clearly and right: {result['decided_accuracy']:.3f}; asked back / left to a person: "
          f"{result['asked_back']:.3f}")
    print(f"language accuracy: {result['language_accuracy']:.3f}")
    fresh = [r for r in load_set(args.set) if r["part"] == "fresh"]
    if fresh and not args.all:
        untuned = evaluate(understanding, fresh)
        print(f"  of which the {untuned['n']} 'fresh' ones (never tuned on): top-1 accuracy "
              f"{untuned['accuracy']:.3f}, action precision {untuned['action_precision']:.3f}, "
              f"decided clearly and right {untuned['decided_accuracy']:.3f}")
    print(f"CPU per message: median {result['cpu_median_ms']:.3f} ms, p95 {result['cpu_p95_ms']:.3f} ms "
          f"(target median <= 1 ms)")
    print(f"{'intent':<26}{'precision':>10}{'recall':>8}{'n':>5}")
    per_intent: dict[str, tuple[float, float, int]] = result["per_intent"]  # type: ignore[assignment]
    for intent, (precision, recall, n) in per_intent.items():
        print(f"{intent:<26}{precision:>10.2f}{recall:>8.2f}{n:>5}")
    confusions: Counter[tuple[str, str]] = result["confusions"]  # type: ignore[assignment]
    print("confusions (true -> taken for: count):")
    for (true, taken), count in confusions.most_common(15):
        print(f"  {true} -> {taken}: {count}")
    if args.wrong:
        for text, true, taken in result["wrong"]:  # type: ignore[attr-defined]
            print(f"  {text!r}: {true} -> {taken}")


if __name__ == "__main__":
    main()
