"""A sync that would remove the university is refused before any change (removal revokes credentials)."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from core.app.context import AppContext
from core.app.errors import MassRemovalError
from core.storage.db import unit_of_work
from core.storage.models import Student
from core.students.demo_register import generate_rows, rows_to_csv
from core.students.register import ImportReport, import_register, mass_removal_reason
from core.students.register_csv import parse_register


def _sync(ctx: AppContext, rows: list[dict[str, str]], **options: object) -> ImportReport:
    parsed = parse_register(rows_to_csv(rows).encode(), box=ctx.box,
                            email_domains=ctx.settings.university.email_domains)
    with unit_of_work(ctx.engine) as session:
        return import_register(session, parsed, now=ctx.clock.now(), today=ctx.clock.today(), sync=True,
                               **options)  # type: ignore[arg-type]


def _statuses(ctx: AppContext) -> dict[str, str]:
    with Session(ctx.engine) as session:
        return {s.album: s.status for s in session.exec(select(Student)).all()}


def _active(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if r["status"] == "active"]


def test_header_only_file_is_refused_and_changes_nothing(ctx: AppContext) -> None:
    rows = list(generate_rows(30))
    _sync(ctx, rows)
    before = _statuses(ctx)
    with pytest.raises(MassRemovalError, match="no student rows") as caught:
        _sync(ctx, [])
    assert caught.value.would_remove == len(_active(rows))
    assert _statuses(ctx) == before


def test_more_than_the_share_is_refused_unless_allowed(ctx: AppContext) -> None:
    rows = list(generate_rows(40))
    _sync(ctx, rows)
    before = _statuses(ctx)
    active = _active(rows)
    cut = len(active) // 2  # half the active students missing: a cut-off export
    kept = [r for r in rows if r not in active[:cut]]
    with pytest.raises(MassRemovalError, match=f"{cut} of {len(active)} active students"):
        _sync(ctx, kept, max_removed_share=0.2)
    assert _statuses(ctx) == before

    report = _sync(ctx, kept, max_removed_share=0.2, allow_mass_removal=True)
    assert report.removed >= cut and report.mass_removal is not None
    assert {_statuses(ctx)[r["album"]] for r in active[:cut]} == {"removed"}


def test_a_few_removals_within_the_share_go_through(ctx: AppContext) -> None:
    rows = list(generate_rows(40))
    _sync(ctx, rows)
    gone = _active(rows)[0]
    report = _sync(ctx, [r for r in rows if r is not gone], max_removed_share=0.2)
    assert report.albums_removed == [gone["album"]] and report.mass_removal is None


def test_the_share_is_a_setting(ctx: AppContext) -> None:
    assert ctx.settings.registry.max_removed_share == 0.2
    rows = list(generate_rows(40))
    _sync(ctx, rows)
    active = _active(rows)
    kept = [r for r in rows if r not in active[:5]]
    with pytest.raises(MassRemovalError):
        _sync(ctx, kept, max_removed_share=0.1)
    assert _sync(ctx, kept, max_removed_share=0.5).removed >= 5


def test_reason_rules() -> None:
    assert mass_removal_reason(rows=0, would_remove=0, active=0, max_share=0.2) is not None
    assert mass_removal_reason(rows=10, would_remove=2, active=10, max_share=0.2) is None
    assert mass_removal_reason(rows=10, would_remove=3, active=10, max_share=0.2) is not None
    assert mass_removal_reason(rows=10, would_remove=0, active=0, max_share=0.0) is None
