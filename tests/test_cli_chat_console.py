"""The console chat (`mleg chat`): a turn that fails is apologised for in the conversation's language."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.app.settings import PROJECT_ROOT
from core.cli.chat import ConsoleChat, _demo_hint
from core.storage.db import make_engine, unit_of_work
from tests.factories import add_student, build_ctx, make_settings


def test_a_failed_turn_is_apologised_for_in_the_students_language(sqlite_ctx: AppContext,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    chat = ConsoleChat(sqlite_ctx, "console-en", write=lines.append)
    chat.turn("/start")
    chat.turn("2")  # the second button: English
    assert chat.service.state_of("console", "console-en").language == "en"

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(chat.service, "handle", broken)
    lines.clear()
    chat.turn("hello")
    assert [line.strip() for line in lines] == [sqlite_ctx.catalog.text("en", "error_technical")]


def test_the_demo_hint_names_only_students_the_database_holds(tmp_path: Path, sqlite_url: str,
                                                               clock: FixedClock) -> None:
    ctx = build_ctx(make_settings(tmp_path, database_url=sqlite_url, mode="demo"), make_engine(sqlite_url), clock)
    with unit_of_work(ctx.engine) as session:
        add_student(session, ctx.box)  # another register: none of the demo people
    assert _demo_hint(ctx) == ""
    with (PROJECT_ROOT / "config" / "demo-register.csv").open(encoding="utf-8") as handle:
        first = next(r for r in csv.DictReader(handle) if r["status"] == "active" and r["pesel"])
    with unit_of_work(ctx.engine) as session:
        add_student(session, ctx.box, pesel=first["pesel"], album=first["album"])
    assert f"PESEL {first['pesel']}, album {first['album']}" in _demo_hint(ctx)
