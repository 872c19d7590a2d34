"""Shared CLI plumbing: building the context once, printing tables and JSON, friendly errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from alembic.script import ScriptDirectory

from core.clock import Clock, FixedClock
from core.context import AppContext
from core.db import alembic_config, current_revision, make_engine
from core.errors import ConfigurationError, MlegError
from core.logging_setup import configure_logging
from core.settings import load_settings

__all__ = ["build_context", "emit_json", "friendly_errors", "print_table"]

P = ParamSpec("P")
R = TypeVar("R")


def build_context(now: datetime | None = None) -> AppContext:
    """Settings -> engine -> context. A fresh SQLite file is migrated on the spot."""
    settings = load_settings()
    configure_logging(settings.log_level)
    engine = make_engine(settings.effective_database_url)
    sqlite = engine.dialect.name == "sqlite"
    clock: Clock | None = FixedClock(now) if now else None
    ctx = AppContext.build(settings, engine=engine, migrate=sqlite, clock=clock)
    if not sqlite:
        head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
        if current_revision(engine) != head:
            raise ConfigurationError("the database schema is not up to date: run `mleg db upgrade`")
    return ctx


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Known errors become one clear line on stderr and exit code 2, not a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except MlegError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc

    return wrapper


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, default=_default, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        typer.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            typer.echo("  ".join("-" * w for w in widths))
