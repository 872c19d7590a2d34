"""The service terms (regulamin): versioned files in `config/terms/`, `<version>.<language>.md`.

The newest version (versions sort as dates, e.g. 2025-10-01) is the one in force; the part
of a file above a line `---` is the short form shown in the chat. The heading ("Terms of the
mLegitymacja service (version …)") is the catalog's (`terms.prompt`, `terms.full_heading`), not
the file's, so it is shown once.

A version may word its terms differently under an issuing policy (MLEG_POLICY, see
docs/domain.md): `<version>.<policy>.<language>.md` (e.g. `2025-10-01.els.pl.md`) is the text
of that version under that policy, used in both languages when both are there; without it the
policy reads the plain `<version>.<language>.md`. Accepting a version accepts it under either
policy: the variants are one version. A version named with a
date (its first 10 characters, YYYY-MM-DD) comes into force on that date (Europe/Warsaw),
so a new version can be put in place ahead of time. A version must have both a Polish and
an English text to count.

The files are read from layers (core.app.config_files): an installation's terms (MLEG_CONFIG_DIR)
besides the shipped ones, its file replacing a shipped one of the same name.

A running service sees a new file without a restart: `TermsSource` looks at the directory
(one `scandir` of a few small entries) at most every `TERMS_CHECK_SECONDS`, and reads the
files again only when their names, sizes or modification times changed, or the day did.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from core.app.config_files import Layers, glob

# The issuing policies a terms file may be specific to (core.app.settings: `policy`).
POLICIES = ("els", "standalone")

__all__ = ["TERMS_CHECK_SECONDS", "Terms", "TermsSource", "load_terms"]

log = logging.getLogger(__name__)

# How often a running service looks for new terms files. Between two looks a turn costs a
# clock read and two comparisons; a look costs one scandir of the directory (tens of
# microseconds for a handful of files). Read when a TermsSource is made.
TERMS_CHECK_SECONDS = 5.0


@dataclass(frozen=True)
class Terms:
    version: str
    summary: dict[str, str]
    full: dict[str, str]
    # Per issuing policy: (summary, full) by language, from `<version>.<policy>.<language>.md`.
    by_policy: dict[str, tuple[dict[str, str], dict[str, str]]] = field(default_factory=dict)

    def summary_for(self, language: str, policy: str) -> str:
        """The short form in `language` under the issuing policy in force."""
        return self.by_policy[policy][0][language] if policy in self.by_policy else self.summary[language]

    def full_for(self, language: str, policy: str) -> str:
        """The whole text in `language` under the issuing policy in force."""
        return self.by_policy[policy][1][language] if policy in self.by_policy else self.full[language]


def _parts(texts: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(summary, full) by language: the summary is the part above `---`, the full text all of it."""
    summary: dict[str, str] = {}
    full: dict[str, str] = {}
    for language, text in texts.items():
        head, separator, _ = text.partition("\n---\n")
        summary[language] = (head if separator else text).strip()
        full[language] = text.replace("\n---\n", "\n\n").strip()
    return summary, full


def _in_force_from(version: str) -> date | None:
    """The date a version comes into force, when it is named with one; None: in force at once."""
    try:
        return date.fromisoformat(version[:10])
    except ValueError:
        return None


def load_terms(directory: Layers, today: date | None = None) -> Terms:
    """The terms in force: the newest complete version, leaving out, given `today`, those dated after it."""
    versions: dict[str, dict[str, str]] = {}
    variants: dict[tuple[str, str], dict[str, str]] = {}  # (version, policy) -> texts by language
    for path in glob(directory, "*.md"):
        version, _, language = path.stem.rpartition(".")
        if not version or language not in ("pl", "en"):
            continue
        base, _, policy = version.rpartition(".")
        if base and policy in POLICIES:
            variants.setdefault((base, policy), {})[language] = path.read_text(encoding="utf-8")
            continue
        versions.setdefault(version, {})[language] = path.read_text(encoding="utf-8")
    complete = sorted(v for v, texts in versions.items() if {"pl", "en"} <= texts.keys())
    if today is not None:
        complete = [v for v in complete if (starts := _in_force_from(v)) is None or starts <= today]
    if not complete:
        where = directory if isinstance(directory, Path) else directory[-1]  # the shipped layer
        raise FileNotFoundError(errno.ENOENT, "no terms in force with both pl and en texts", str(where))
    current = complete[-1]
    summary, full = _parts(versions[current])
    # A policy's variant counts only with both languages, as a version does: never Polish under
    # one policy beside English under the other.
    by_policy = {policy: _parts(texts) for (version, policy), texts in variants.items()
                 if version == current and {"pl", "en"} <= texts.keys()}
    for (version, policy), texts in variants.items():
        if version == current and policy not in by_policy:
            log.warning("terms %s for policy %s lack a language (%s): the plain version is used",
                        version, policy, ", ".join(sorted(texts)))
    return Terms(current, summary, full, by_policy)


def _signature(directory: Layers) -> tuple[tuple[str, int, int], ...]:
    """What changes when a terms file is added, removed, renamed or rewritten (in any layer)."""
    found: list[tuple[str, int, int]] = []
    layers = [directory] if isinstance(directory, Path) else directory
    for layer in layers:
        if layer is not layers[-1] and not layer.is_dir():
            continue  # an installation need not add terms; the last (shipped) layer must be there
        with os.scandir(layer) as entries:
            found.extend(
                (os.path.join(layer, entry.name), (stat := entry.stat()).st_mtime_ns, stat.st_size)
                for entry in entries if entry.name.endswith(".md")
            )
    return tuple(sorted(found))


class TermsSource:
    """The terms in force for a long-running service: a new file counts from the next turn
    after the next look (at most `check_every` seconds later), a dated one from its date.

    A directory that has no complete version in force for a moment (a file half copied, one
    language not yet there) keeps the version in force: the service never runs without terms.
    """

    def __init__(self, directory: Layers, *, today: date | None = None, check_every: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self.check_every = TERMS_CHECK_SECONDS if check_every is None else check_every
        self._monotonic = monotonic
        self._looked_at = monotonic()
        self._signature = _signature(directory)
        self._today = today
        self._terms = load_terms(directory, today)  # without a day: refined on the first `current`

    def current(self, today: date) -> Terms:
        now = self._monotonic()
        changed = today != self._today
        if now - self._looked_at >= self.check_every:
            self._looked_at = now
            try:
                signature = _signature(self.directory)
            except OSError as exc:
                log.warning("terms directory %s unreadable, the terms in force stay: %s", self.directory, exc)
                signature = self._signature
            if signature != self._signature:
                self._signature, changed = signature, True
        if changed:
            self._reload(today)
        return self._terms

    def _reload(self, today: date) -> None:
        # Taken as seen even when the files cannot be read: the next change of the files (or
        # the day) tries again, not every turn in between.
        self._today = today
        try:
            terms = load_terms(self.directory, today)
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("terms in %s not loaded, version %s stays in force: %s",
                        self.directory, self._terms.version, exc)
            return
        if terms.version != self._terms.version:
            log.info("terms version %s in force (was %s)", terms.version, self._terms.version)
        self._terms = terms
