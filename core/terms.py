"""The service terms (regulamin): versioned files in `config/terms/`, `<version>.<language>.md`.

The newest version (versions sort as dates, e.g. 2025-10-01) is the one in force; the part
of a file above a line `---` is the short form shown in the chat.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Terms", "load_terms"]


@dataclass(frozen=True)
class Terms:
    version: str
    summary: dict[str, str]
    full: dict[str, str]


def load_terms(directory: Path) -> Terms:
    versions: dict[str, dict[str, str]] = {}
    for path in directory.glob("*.md"):
        version, _, language = path.stem.rpartition(".")
        if not version or language not in ("pl", "en"):
            continue
        versions.setdefault(version, {})[language] = path.read_text(encoding="utf-8")
    complete = sorted(v for v, texts in versions.items() if {"pl", "en"} <= texts.keys())
    if not complete:
        raise FileNotFoundError(f"no terms with both pl and en texts in {directory}")
    current = complete[-1]
    summary: dict[str, str] = {}
    full: dict[str, str] = {}
    for language, text in versions[current].items():
        head, separator, _ = text.partition("\n---\n")
        summary[language] = (head if separator else text).strip()
        full[language] = text.replace("\n---\n", "\n\n").strip()
    return Terms(current, summary, full)
