"""`mleg understand`: what the chat and the mailbox take a text for, for staff tuning config/intents.toml."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from core.app.settings import load_settings
from core.cli.common import friendly_errors
from core.support.faq import Faq

__all__ = ["understand_command"]


def _result(faq: Faq, text: str, language: str | None, default: str) -> dict[str, object]:
    understood = faq.understand(text, language or default)
    lang = language or understood.language
    entry = faq.entry_for(understood, lang)
    return {"intent": understood.intent, "confidence": understood.confidence, "language": lang,
            "faq_entry": entry.id if entry else None}


@friendly_errors
def understand_command(
    text: Annotated[str | None, typer.Argument(help="The text; without it, one text per line from standard input.")]
    = None,
    lang: Annotated[str | None, typer.Option("--lang", help="pl or en (default: told from the text).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON (JSON Lines when reading standard input).")] = False,
) -> None:
    """Intent, confidence, language and the FAQ entry the mailbox would answer with."""
    if lang not in (None, "pl", "en"):
        raise typer.BadParameter("--lang is pl or en")
    settings = load_settings()
    faq = Faq.load(settings.config_layers("faq"), credential=settings.credential)
    texts = [text] if text is not None else (line.rstrip("\n") for line in sys.stdin)
    for one in texts:
        if text is None and not one.strip():
            continue
        result = _result(faq, one, lang, settings.default_language)
        if as_json:
            typer.echo(json.dumps(result, ensure_ascii=False))
        else:
            typer.echo(f"{result['intent']}\tconfidence {result['confidence']:.2f}\tlanguage {result['language']}"
                       f"\tfaq_entry {result['faq_entry'] or '-'}" + (f"\t{one}" if text is None else ""))
