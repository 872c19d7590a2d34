"""`mleg registry import` refusals as an operator meets them: mass removal, dry-run albums, --json problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.students.demo_register import generate_rows, rows_to_csv
from tests.cli_helpers import cli_environment, run

pytestmark = pytest.mark.process  # every test here runs `mleg` or serve as a process


@pytest.fixture
def cli_env(tmp_path: Path, sqlite_url: str) -> dict[str, str]:
    return cli_environment(tmp_path, sqlite_url)


@pytest.fixture
def rows(cli_env: dict[str, str], tmp_path: Path) -> list[dict[str, str]]:
    """Forty students already in the register."""
    rows = list(generate_rows(40))
    full = tmp_path / "full.csv"
    full.write_text(rows_to_csv(rows), encoding="utf-8")
    assert run(["registry", "import", str(full)], cli_env).returncode == 0
    return rows


def _write(tmp_path: Path, name: str, rows: list[dict[str, str]]) -> str:
    path = tmp_path / name
    path.write_text(rows_to_csv(rows), encoding="utf-8")
    return str(path)


def _removed(cli_env: dict[str, str], tmp_path: Path, rows: list[dict[str, str]]) -> int:
    """How many a sync of the full file would mark removed now (a dry run): 0 = none were removed."""
    result = run(["registry", "import", _write(tmp_path, "again.csv", rows), "--dry-run", "--json"], cli_env)
    return int(json.loads(result.stdout)["removed"])


def test_header_only_sync_is_refused_unless_forced(
    cli_env: dict[str, str], tmp_path: Path, rows: list[dict[str, str]]
) -> None:
    empty = _write(tmp_path, "header-only.csv", [])
    refused = run(["registry", "import", empty, "--sync"], cli_env)
    assert refused.returncode == 2
    assert "refused, nothing was changed" in refused.stderr and "no student rows" in refused.stderr
    assert "--allow-mass-removal" in run(["registry", "import", "--help"], cli_env).stdout

    as_json = run(["registry", "import", empty, "--sync", "--json"], cli_env)
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["refused"] is True

    forced = run(["registry", "import", empty, "--sync", "--allow-mass-removal", "--json"], cli_env)
    assert forced.returncode == 0, forced.stderr
    # Only the active ones: a missing graduated or suspended student keeps that status.
    forced_report = json.loads(forced.stdout)
    assert forced_report["removed"] == sum(r["status"] == "active" for r in rows)
    assert forced_report["kept_absent"] == sum(r["status"] in ("graduated", "suspended") for r in rows)


def test_cut_off_export_is_refused(cli_env: dict[str, str], tmp_path: Path, rows: list[dict[str, str]]) -> None:
    result = run(["registry", "import", _write(tmp_path, "cut.csv", rows[:10]), "--sync"], cli_env)
    assert result.returncode == 2 and "MLEG_REGISTRY__MAX_REMOVED_SHARE" in result.stderr
    env = dict(cli_env, MLEG_REGISTRY__MAX_REMOVED_SHARE="1")
    assert run(["registry", "import", _write(tmp_path, "cut.csv", rows[:10]), "--sync"], env).returncode == 0


def test_dry_run_lists_the_albums_it_would_remove(
    cli_env: dict[str, str], tmp_path: Path, rows: list[dict[str, str]]
) -> None:
    gone = [r for r in rows if r["status"] == "active"][:2]
    partial = _write(tmp_path, "partial.csv", [r for r in rows if r not in gone])
    expected = sorted(r["album"] for r in gone)

    text = run(["registry", "import", partial, "--sync", "--dry-run"], cli_env)
    assert text.returncode == 0, text.stderr
    assert "albums that would be marked removed (2)" in text.stdout
    assert all(album in text.stdout for album in expected)

    as_json = json.loads(run(["registry", "import", partial, "--sync", "--dry-run", "--json"], cli_env).stdout)
    assert as_json["albums_removed"] == expected and as_json["dry_run"] is True
    assert _removed(cli_env, tmp_path, rows) == 0, "a dry run changes nothing"


def test_dry_run_of_a_mass_removal_lists_and_fails(
    cli_env: dict[str, str], tmp_path: Path, rows: list[dict[str, str]]
) -> None:
    result = run(["registry", "import", _write(tmp_path, "cut.csv", rows[:10]), "--sync", "--dry-run", "--json"],
                 cli_env)
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["ok"] is False and "active students" in report["mass_removal"]
    assert len(report["albums_removed"]) == report["removed"] > 0
    assert _removed(cli_env, tmp_path, rows) == 0


def test_refused_file_with_json_prints_the_problems(cli_env: dict[str, str], tmp_path: Path) -> None:
    rows = list(generate_rows(5))
    rows[1]["pesel"] = "12345678901"
    rows[3]["email"] = "x@gmail.com"
    result = run(["registry", "import", _write(tmp_path, "bad.csv", rows), "--json"], cli_env)
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["refused"] is True and report["ok"] is False
    assert [p["line"] for p in report["problems"]] == [3, 5]
    assert all(p["message"] for p in report["problems"])
    for row in rows:
        if row["pesel"]:
            assert row["pesel"] not in result.stdout + result.stderr


def test_file_without_header_shows_no_pesel(cli_env: dict[str, str], tmp_path: Path) -> None:
    rows = [r for r in generate_rows(5) if r["pesel"]]
    path = tmp_path / "no-header.csv"
    path.write_text(rows_to_csv(rows).split("\n", 1)[1], encoding="utf-8")
    result = run(["registry", "import", str(path)], cli_env)
    assert result.returncode == 2 and "no header" in result.stderr
    assert not [r for r in rows if r["pesel"] in result.stdout + result.stderr]
