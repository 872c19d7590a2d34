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
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url

from core.app.clock import Clock, FixedClock
from core.app.config_files import check_files, problem_with
from core.app.context import AppContext
from core.app.errors import ConfigurationError, MlegError
from core.app.logging_setup import configure_logging
from core.app.settings import Settings, load_settings
from core.storage.db import alembic_config, current_revision, make_engine

__all__ = ["build_context", "emit_json", "friendly_errors", "masked_url", "open_database",
           "print_table"]

_URL_EXAMPLES = "e.g. sqlite:///var/mleg.db or postgresql://user@host:5432/mleg"
# Failures of the database connection itself (server down, wrong role or password, network);
# a programming error (ProgrammingError, IntegrityError ...) keeps its traceback.
_CONNECTION_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError)

P = ParamSpec("P")
R = TypeVar("R")


def masked_url(url: str) -> str:
    """The URL as it may be shown: password hidden; nothing of it when it does not parse."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sa_exc.ArgumentError, ValueError):
        return "(unparsable)"


def _connection_problem(exc: sa_exc.DBAPIError, url: str) -> str:
    """The driver's first line (libpq: 'connection refused', 'role "x" does not exist'), password scrubbed."""
    text = str(exc.orig if exc.orig is not None else exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    try:
        password = make_url(url).password
    except (sa_exc.ArgumentError, ValueError):
        password = None
    return first.replace(str(password), "***") if password else first


def _engine_for(url: str) -> Engine:
    """make_engine, with a malformed or unsupported MLEG_DATABASE_URL as a ConfigurationError."""
    try:
        return make_engine(url)
    except sa_exc.NoSuchModuleError as exc:
        raise ConfigurationError(
            f"MLEG_DATABASE_URL {masked_url(url)}: unknown kind of database ({_URL_EXAMPLES})") from exc
    except (sa_exc.ArgumentError, ValueError) as exc:
        raise ConfigurationError(f"MLEG_DATABASE_URL is not a database URL ({_URL_EXAMPLES})") from exc
    except ImportError as exc:
        # create_engine imports the dialect's driver (mysql:// wants MySQLdb): not installed here.
        raise ConfigurationError(
            f"MLEG_DATABASE_URL {masked_url(url)}: its database driver ({exc.name}) is not installed; "
            f"supported: SQLite and PostgreSQL ({_URL_EXAMPLES})") from exc
    except OSError as exc:
        raise ConfigurationError(
            f"MLEG_DATABASE_URL {masked_url(url)}: cannot create the SQLite file's folder ({exc.strerror})"
        ) from exc


def open_database(settings: Settings) -> Engine:
    """The engine, connected once, so a wrong URL, a server that is down or a refused role is one clear line."""
    url = settings.effective_database_url
    engine = _engine_for(url)
    try:
        with engine.connect():
            pass
    except _CONNECTION_ERRORS as exc:
        engine.dispose()
        raise ConfigurationError(
            f"cannot connect to the database {masked_url(url)} (MLEG_DATABASE_URL): "
            f"{_connection_problem(exc, url)}") from exc
    return engine


def build_context(now: datetime | None = None) -> AppContext:
    """Settings -> files checked -> engine -> context. A fresh SQLite file is migrated on the spot."""
    settings = load_settings()
    configure_logging(settings.log_level)
    check_files(settings)  # the config files, and the data folder made when new
    engine = open_database(settings)
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
        except _CONNECTION_ERRORS as exc:
            if not exc.connection_invalidated:
                raise
            # The connection broke during the command (server restarted, network gone).
            typer.echo(f"error: lost the database connection: {_connection_problem(exc, '')}", err=True)
            raise typer.Exit(2) from exc
        except OSError as exc:
            # A config file or the data folder gone or unreadable after the checks at start.
            problem = _file_problem(exc)
            if problem is None:
                raise
            typer.echo(f"error: {problem}", err=True)
            raise typer.Exit(2) from exc

    return wrapper


def _file_problem(exc: OSError) -> ConfigurationError | None:
    """The failed file as one line naming the setting behind it; None when it is none of ours (a defect)."""
    try:
        return problem_with(load_settings(), exc)
    except MlegError:
        return None


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
