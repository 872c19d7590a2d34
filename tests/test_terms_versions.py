"""The terms of use by version: a new version is in force for the next turn without a restart, one
dated in the future is not in force before its date, the directory is looked at every few seconds,
and a directory without a complete version keeps the last good one."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.app.clock import FixedClock
from core.app.context import AppContext
from core.app.settings import PROJECT_ROOT
from core.conversation import terms as terms_module
from core.storage.db import make_engine
from core.storage.models import TermsAcceptance
from tests.chat_driver import ChatDriver
from tests.factories import build_ctx, make_settings
from tests.support.lifecycle import enrolled

CONFIG = PROJECT_ROOT / "config"


# --- terms: a new version without a restart, a future one not before its date -----------------

@pytest.fixture
def own_config(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(CONFIG, target)
    return target


@pytest.fixture
def terms_ctx(tmp_path: Path, sqlite_url: str, clock: FixedClock, own_config: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[AppContext]:
    # Every turn looks at the directory (the default: every few seconds).
    monkeypatch.setattr("core.conversation.terms.TERMS_CHECK_SECONDS", 0.0)
    engine = make_engine(sqlite_url)
    yield build_ctx(make_settings(tmp_path, database_url=sqlite_url, config_dir=own_config), engine, clock)
    engine.dispose()


def _stage_terms(config: Path, version: str) -> None:
    for lang in ("pl", "en"):
        old = (config / "terms" / f"2025-10-01.{lang}.md").read_text(encoding="utf-8")
        (config / "terms" / f"{version}.{lang}.md").write_text(old + "\nNEW CLAUSE\n", encoding="utf-8")


def _versions(ctx: AppContext) -> list[str]:
    with Session(ctx.engine) as session:
        return sorted(a.version for a in session.exec(select(TermsAcceptance)).all())


def test_new_terms_are_in_force_for_the_next_turn_without_a_restart(terms_ctx: AppContext, own_config: Path) -> None:
    _, pesel, album = enrolled(terms_ctx)
    chat = ChatDriver(terms_ctx)
    chat.identify(pesel, album)
    chat.press("menu:request")
    _stage_terms(own_config, "2026-10-05")
    chat.say("tak")  # the same running service
    assert "Regulamin usługi zmienił się" in chat.text and "2026-10-05" in chat.text
    assert not chat.outbox("activation")  # nothing applied for under terms not accepted
    chat.press("terms:accept")
    assert _versions(terms_ctx) == ["2025-10-01", "2026-10-05"]


def test_terms_dated_in_the_future_come_into_force_on_their_date(terms_ctx: AppContext, own_config: Path) -> None:
    _, pesel, album = enrolled(terms_ctx)
    _stage_terms(own_config, "2026-10-07")  # staged two days ahead
    chat = ChatDriver(terms_ctx)
    chat.identify(pesel, album)
    assert "Regulamin" not in chat.text
    assert _versions(terms_ctx) == ["2025-10-01"]
    chat.say("/status")
    assert "Regulamin usługi zmienił się" not in chat.text
    clock = terms_ctx.clock
    assert isinstance(clock, FixedClock)
    clock.set(datetime(2026, 10, 6, 22, 30, tzinfo=UTC))  # 7 October, 00:30 in Warsaw
    chat.say("/status")
    assert "Regulamin usługi zmienił się" in chat.text and "2026-10-07" in chat.text


def test_load_terms_leaves_out_versions_dated_after_today(own_config: Path) -> None:
    _stage_terms(own_config, "2026-10-07")
    assert terms_module.load_terms(own_config / "terms").version == "2026-10-07"  # without a date: the newest
    assert terms_module.load_terms(own_config / "terms", today=date(2026, 10, 6)).version == "2025-10-01"
    assert terms_module.load_terms(own_config / "terms", today=date(2026, 10, 7)).version == "2026-10-07"


def test_terms_directory_is_looked_at_at_most_every_few_seconds(own_config: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = [100.0]
    source = terms_module.TermsSource(own_config / "terms", check_every=5.0, monotonic=lambda: ticks[0])
    today = date(2026, 10, 5)
    assert source.current(today).version == "2025-10-01"
    _stage_terms(own_config, "2026-10-05")
    ticks[0] += 4.0
    assert source.current(today).version == "2025-10-01"  # not looked at yet
    ticks[0] += 1.5
    assert source.current(today).version == "2026-10-05"
    # Half-written (only one language so far): the version in force stays.
    (own_config / "terms" / "2026-10-06.pl.md").write_text("x\n", encoding="utf-8")
    ticks[0] += 10
    assert source.current(date(2026, 10, 6)).version == "2026-10-05"
    # Between looks a turn costs a clock read and two comparisons: the directory is not read.
    looks: list[str] = []
    real_signature, real_load = terms_module._signature, terms_module.load_terms
    monkeypatch.setattr(terms_module, "_signature", lambda d: looks.append("list") or real_signature(d))
    monkeypatch.setattr(terms_module, "load_terms", lambda *a, **k: looks.append("load") or real_load(*a, **k))
    for _ in range(100):
        assert source.current(date(2026, 10, 6)).version == "2026-10-05"
    assert looks == []
    ticks[0] += 5.0
    source.current(date(2026, 10, 6))
    assert looks == ["list"]  # the next look, once


def test_terms_without_any_complete_version_keep_the_last_good_one(own_config: Path) -> None:
    ticks = [0.0]
    source = terms_module.TermsSource(own_config / "terms", check_every=1.0, monotonic=lambda: ticks[0])
    assert source.current(date(2026, 10, 5)).version == "2025-10-01"
    for path in (own_config / "terms").glob("*.md"):
        path.unlink()
    ticks[0] += 2
    assert source.current(date(2026, 10, 5)).version == "2025-10-01"
