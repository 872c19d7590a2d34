"""Register import and sync: added, updated, removed; bad files refused whole (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import date

import pytest
from sqlmodel import Session, select

from core.app.context import AppContext
from core.app.errors import RegisterImportError
from core.storage.db import unit_of_work
from core.storage.models import Student
from core.students.demo_register import generate_rows, rows_to_csv
from core.students.register import import_register
from core.students.register_csv import HEADER, parse_register


def _import(ctx: AppContext, data: bytes, sync: bool = False):  # type: ignore[no-untyped-def]
    rows = parse_register(data, box=ctx.box, email_domains=ctx.settings.university.email_domains)
    with unit_of_work(ctx.engine) as session:
        return import_register(session, rows, now=ctx.clock.now(), today=ctx.clock.today(), sync=sync)


def _csv(rows: list[dict[str, str]]) -> bytes:
    return rows_to_csv(rows).encode()


def _students(ctx: AppContext) -> dict[str, Student]:
    with Session(ctx.engine) as session:
        return {s.album: s for s in session.exec(select(Student)).all()}


def test_import_then_sync(ctx: AppContext) -> None:
    rows = list(generate_rows(30))
    report = _import(ctx, _csv(rows))
    assert (report.added, report.updated, report.unchanged) == (30, 0, 0)

    rows[0]["last_name"] = "Nowakowska"
    rows[1]["status"] = "graduated"
    dropped = rows.pop()
    report = _import(ctx, _csv(rows), sync=True)
    assert (report.added, report.updated, report.unchanged, report.removed) == (0, 2, 27, 1)
    students = _students(ctx)
    assert students[rows[0]["album"]].last_name == "Nowakowska"
    assert students[rows[1]["album"]].status == "graduated"
    assert students[dropped["album"]].status == "removed"
    assert students[dropped["album"]].removed_on == ctx.clock.today()

    # Without --sync, a missing student is left alone.
    report = _import(ctx, _csv(rows[:5]))
    assert report.removed == 0


def test_pesel_never_stored_in_clear(ctx: AppContext) -> None:
    rows = list(generate_rows(10))
    _import(ctx, _csv(rows))
    for row in rows:
        student = _students(ctx)[row["album"]]
        if row["pesel"]:
            assert student.pesel_hash == ctx.box.pesel_hash(row["pesel"])
            assert student.pesel_masked == row["pesel"][:2] + "*******" + row["pesel"][-2:]
        else:
            assert student.pesel_hash is None


def _refused(ctx: AppContext, data: bytes) -> list[tuple[int, str]]:
    before = _students(ctx)
    with pytest.raises(RegisterImportError) as caught:
        _import(ctx, data)
    assert _students(ctx).keys() == before.keys(), "a refused file must change nothing"
    return caught.value.problems


def test_bad_lines_refuse_the_whole_file_and_are_all_listed(ctx: AppContext) -> None:
    _import(ctx, _csv(list(generate_rows(3, start_album=900001))))
    rows = list(generate_rows(8))
    rows[1]["pesel"] = rows[1]["pesel"][:10] + str((int(rows[1]["pesel"][10]) + 1) % 10)
    rows[2]["els_valid_until"] = "31.03.2027"
    rows[3]["album"] = rows[0]["album"]
    rows[4]["email"] = "someone@gmail.com"
    rows[5]["study_level"] = "phd"
    rows[6]["email"] = "not-an-email"
    rows[7]["pesel"] = "1234"
    problems = _refused(ctx, _csv(rows))
    by_line = {line: reason for line, reason in problems}
    assert "check digit" in by_line[3]
    assert "ISO date" in by_line[4]
    assert "duplicate album" in by_line[5]
    assert "not a university domain" in by_line[6]
    assert "study_level" in by_line[7]
    assert "malformed" in by_line[8]
    assert "11 digits" in by_line[9]
    assert set(_students(ctx)) == {"900001", "900002", "900003"}


def test_wrong_header_refused(ctx: AppContext) -> None:
    data = b"album;pesel;name\n1;2;3\n"
    assert "header must be exactly" in _refused(ctx, data)[0][1]


def test_wrong_encoding_refused(ctx: AppContext) -> None:
    rows = [dict(r, first_name="Ewa", last_name="Nowak") for r in generate_rows(3)]
    rows[2]["last_name"] = "Żółć"
    data = rows_to_csv(rows).encode("cp1250")
    problems = _refused(ctx, data)
    assert problems[0][0] == 4 and "not UTF-8" in problems[0][1]


def test_duplicate_pesel_refused(ctx: AppContext) -> None:
    rows = list(generate_rows(3))
    rows[2]["pesel"] = rows[0]["pesel"]
    assert "same PESEL" in _refused(ctx, _csv(rows))[0][1]


def test_pesel_already_owned_by_another_album_refused(ctx: AppContext) -> None:
    rows = list(generate_rows(2))
    _import(ctx, _csv(rows))
    newcomer = dict(rows[0], album="999999", email="x.y.999999@student.example.edu.pl")
    problems = _refused(ctx, _csv([newcomer]))
    assert "already in the register" in problems[0][1]


def test_removed_needs_a_date_and_counts_columns(ctx: AppContext) -> None:
    data = (",".join(HEADER) + "\n" + "1,,A,B,a.b@student.example.edu.pl,first_cycle,removed,,,\n"
            + "2,,A,B\n").encode()
    problems = _refused(ctx, data)
    assert any("removed_on is required" in r for _, r in problems)
    assert any("expected 10 columns" in r for _, r in problems)


def test_bom_and_blank_lines_accepted(ctx: AppContext) -> None:
    data = "\ufeff".encode() + _csv(list(generate_rows(2))) + b"\n\n"
    assert _import(ctx, data).added == 2


def test_subdomain_of_university_domain_accepted(ctx: AppContext) -> None:
    row = dict(next(generate_rows(1)), email="a.b@wydzial.student.example.edu.pl")
    assert _import(ctx, _csv([row])).added == 1


def test_student_without_pesel_is_imported(ctx: AppContext) -> None:
    row = dict(next(generate_rows(1)), pesel="")
    _import(ctx, _csv([row]))
    assert _students(ctx)[row["album"]].pesel_hash is None
    assert _students(ctx)[row["album"]].removed_on is None or isinstance(
        _students(ctx)[row["album"]].removed_on, date)
