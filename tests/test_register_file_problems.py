"""Register files the parser refuses, and how it says so: line numbers counted through quoted cells,
control characters, a stray quote, values too long, Excel's mangled PESELs; no PESEL echoed."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import date
from pathlib import Path

import pytest

from core.app.context import AppContext
from core.app.errors import RegisterImportError
from core.storage.db import unit_of_work
from core.students.demo_register import make_pesel
from core.students.register import RegisterWriteError, import_register
from core.students.register_csv import HEADER, MAX_LENGTHS
from tests.cli_helpers import cli_environment, run
from tests.support.register_csv import P1, P2, P3, D, csv_file, csv_line, parse_rows, refusal_problems

# --- line numbers, control characters ----------------------------------------------------------

def test_line_numbers_count_the_lines_of_a_quoted_cell(ctx: AppContext) -> None:
    data = csv_file(csv_line("1001", P1, "Anna", '"Nowak\nKowalska\nx"', f"a@{D}"),
                    csv_line("1002", P2, "C", "D", f"c@{D}", level="bachelor"))
    problems = dict(refusal_problems(ctx, data))
    assert "last_name contains a line break" in problems[2] and "line 4" in problems[2]
    assert "study_level" in problems[5]


def test_nul_and_control_characters_are_refused_per_line(ctx: AppContext) -> None:
    data = csv_file(csv_line("1001", P1, "A", "B\x00", f"a@{D}"), csv_line("1002", P2, "C\x07", "D", f"c@{D}"),
                    csv_line("1003", P3, "E", "F", f"e@{D}"))
    problems = refusal_problems(ctx, data)
    assert problems == [(2, "last_name contains a NUL character: a cell must be one line of plain text"),
                        (3, "first_name contains a control character (U+0007): a cell must be one line of "
                            "plain text")]


# --- a stray quote, values too long --------------------------------------------------------------

def test_unbalanced_quote_is_a_problem_on_its_line(ctx: AppContext) -> None:
    lines = [csv_line(str(100000 + i), "", "Ann", "Lee", f"a{i}@{D}") for i in range(4000)]
    lines[2] = csv_line("100002", "", '"Natalia', "Lee", f"n@{D}")
    problems = refusal_problems(ctx, csv_file(*lines))
    assert problems[-1][0] == 4 and "unbalanced quote" in problems[-1][1]
    small = refusal_problems(ctx, csv_file(*lines[:5]))
    assert small[0][0] == 4 and "unbalanced quote" in small[0][1]


def test_values_longer_than_the_columns_are_problems(ctx: AppContext) -> None:
    data = csv_file(csv_line("9" * 40, "", "A", "B", f"yy@{D}"), csv_line("9001", P1, "Ż" * 130, "B", f"zz@{D}"),
                    csv_line("9002", "", "A", "B", f"xx@{D}", els="E" * 50))
    problems = dict(refusal_problems(ctx, data))
    assert problems[2] == f"album is longer than {MAX_LENGTHS['album']} characters (40)"
    assert problems[3] == f"first_name is longer than {MAX_LENGTHS['first_name']} characters (130)"
    assert problems[4] == f"els_number is longer than {MAX_LENGTHS['els_number']} characters (50)"


def test_a_database_refusal_quotes_no_data(ctx: AppContext) -> None:
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("SQLite does not enforce lengths")
    [row] = parse_rows(ctx, csv_file(csv_line("9001", P1, "Anna", "B", f"zz@{D}")))
    row = dataclasses.replace(row, first_name="Ż" * 200)
    with unit_of_work(ctx.engine) as session, pytest.raises(RegisterWriteError) as caught:
        import_register(session, [row], now=ctx.clock.now(), today=ctx.clock.today())
    assert "Ż" not in str(caught.value) and "nothing was changed" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.process
def test_cli_json_reports_csv_errors_and_long_values(tmp_path: Path, sqlite_url: str) -> None:
    env = cli_environment(tmp_path, sqlite_url)
    lines = [csv_line(str(100000 + i), "", "Ann", "Lee", f"a{i}@{D}") for i in range(4000)]
    lines[2] = csv_line("100002", "", '"Natalia', "Lee", f"n@{D}")
    broken = tmp_path / "unbalanced.csv"
    broken.write_bytes(csv_file(*lines))
    long = tmp_path / "long.csv"
    long.write_bytes(csv_file(csv_line("9" * 40, "", "A", "B", f"yy@{D}")))
    for path, line in ((broken, 4), (long, 2)):
        result = run(["registry", "import", str(path), "--json"], env)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        report = json.loads(result.stdout)
        assert report["refused"] is True and report["problems"][-1]["line"] == line


# --- nothing PESEL-like echoed -------------------------------------------------------------------

def test_problems_mask_every_pesel_like_value(ctx: AppContext) -> None:
    spaced = P2[:6] + " " + P2[6:]
    data = csv_file(csv_line("1001", P1, "A", "B", P1[1:]), csv_line("1002", P2, "C", "D", f"c@{D}", level=spaced),
                    csv_line("1003", P3, "E", "F", f"e@{D}", status="4.25063E+10"),
                 csv_line("1004", "", "G", "H", f"g@{D}", els_until=P3[1:]))
    text = str(RegisterImportError(refusal_problems(ctx, data)))
    for pesel in (P1, P2, P3):
        assert pesel[1:] not in text and pesel[:6] not in text.replace(" ", "")
    assert "25063" not in text
    assert P1[1:3] + "******" + P1[-2:] in text  # 10 digits, masked as such


# --- Excel -----------------------------------------------------------------------------------------

def test_excel_mangled_pesels_get_one_hint(ctx: AppContext) -> None:
    data = csv_file(csv_line("1001", P1[1:], "A", "B", f"a@{D}"), csv_line("1002", "9.91201E+10", "C", "D", f"c@{D}"),
                    csv_line("1003", make_pesel(date(2004, 2, 2), 5, False)[1:], "E", "F", f"e@{D}"))
    problems = refusal_problems(ctx, data)
    assert [line for line, _ in problems] == [2, 3, 4]
    hints = [message for _, message in problems if "Excel" in message]
    assert len(hints) == 1 and "3 line(s)" in hints[0] and "Text" in hints[0]
    assert "leading 0" in problems[0][1] and "scientific notation" in problems[1][1]


def test_trailing_empty_columns_are_ignored(ctx: AppContext) -> None:
    data = (",".join(HEADER) + ",,\n" + csv_line("1001", P1, "A", "B", f"a@{D}") + ",,\n"
            + csv_line("1002", P2, "C", "D", f"c@{D}") + "\n").encode()
    assert [row.album for row in parse_rows(ctx, data)] == ["1001", "1002"]
    refused = refusal_problems(ctx, data.replace(b",,\n1001", b",x\n1001"))
    assert refused[0][0] == 1


@pytest.mark.process
def test_no_pesel_reaches_the_cli_output(tmp_path: Path, sqlite_url: str) -> None:
    env = cli_environment(tmp_path, sqlite_url)
    path = tmp_path / "bad.csv"
    path.write_bytes(csv_file(csv_line("1001", P1, "A", "B", P1[1:]),
                              csv_line("1003", "4.25063E+10", "E", "F", f"e@{D}")))
    result = run(["registry", "import", str(path), "--json"], env)
    assert result.returncode == 2
    assert not re.search(r"\d{10}", result.stdout + result.stderr)
