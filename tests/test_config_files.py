"""Shipped texts read as package data, overridden file by file from MLEG_CONFIG_DIR; data in MLEG_VAR_DIR,
else STATE_DIRECTORY, else the user's data dir; a missing or unreadable file is one `error:` line."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from core.app.catalog import Catalog
from core.app.config_files import check_files, problem_with, shipped_dir
from core.app.errors import ConfigurationError
from core.app.settings import PROJECT_ROOT, load_settings
from core.conversation.terms import TermsSource, load_terms
from core.support.faq import Faq
from tests.cli_helpers import cli_environment, run
from tests.factories import TEST_SECRET


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installation's config folder (MLEG_CONFIG_DIR), empty: it overrides nothing yet."""
    folder = tmp_path / "etc-mleg"
    folder.mkdir()
    monkeypatch.setenv("MLEG_CONFIG_DIR", str(folder))
    monkeypatch.setenv("MLEG_SECRET_KEY", TEST_SECRET)
    return folder


def test_shipped_texts_come_from_the_package() -> None:
    # In the source tree (an editable install) the package `core._config` is the folder config/.
    assert shipped_dir() == PROJECT_ROOT / "config"
    settings = load_settings(secret_key=TEST_SECRET)
    assert settings.config_layers("faq") == [PROJECT_ROOT / "config" / "faq"]


def test_one_catalog_file_overrides_its_shipped_namesake_only(installed: Path) -> None:
    (installed / "messages" / "pl").mkdir(parents=True)
    (installed / "messages" / "pl" / "bot.toml").write_text(
        'university_extra = "Dziekanat czynny 9-15"\n'
        + (PROJECT_ROOT / "config/messages/pl/bot.toml").read_text(encoding="utf-8"), encoding="utf-8")
    (installed / "messages" / "pl" / "local.toml").write_text('local_only = "Tylko u nas"\n', encoding="utf-8")
    catalog = Catalog.load(load_settings().config_layers("messages"))
    assert catalog.text("pl", "university_extra") == "Dziekanat czynny 9-15"
    assert catalog.text("pl", "local_only") == "Tylko u nas"  # a file only the installation has counts too
    shipped = Catalog.load(PROJECT_ROOT / "config" / "messages")
    assert catalog.keys("pl") == shipped.keys("pl") | {"university_extra", "local_only"}  # the rest still shipped


def test_an_installation_edits_its_faq_without_touching_the_package(installed: Path) -> None:
    (installed / "faq").mkdir()
    (installed / "faq" / "pl.toml").write_text(
        'topic = ["mlegitymacja"]\n[[entry]]\nid = "godziny"\nkeywords = ["godziny otwarcia"]\n'
        'answer = "Biuro czynne 9-15."\n', encoding="utf-8")
    faq = Faq.load(load_settings().config_layers("faq"))
    assert [e.id for e in faq.entries("pl")] == ["godziny"]
    assert faq.entries("en") == Faq.load(PROJECT_ROOT / "config" / "faq").entries("en")  # en: the shipped file


def test_terms_of_the_installation_come_into_force_beside_the_shipped_ones(installed: Path) -> None:
    layers = load_settings().config_layers("terms")
    source = TermsSource(layers, check_every=0.0)  # the installation has no terms folder yet
    assert source.current(date(2026, 1, 1)).version == "2025-10-01"
    (installed / "terms").mkdir()
    for language in ("pl", "en"):
        (installed / "terms" / f"2026-02-01.{language}.md").write_text(f"Regulamin {language}\n", encoding="utf-8")
    assert source.current(date(2026, 1, 31)).version == "2025-10-01"
    assert source.current(date(2026, 2, 1)).version == "2026-02-01"  # seen without a restart
    assert load_terms(layers).summary["en"] == "Regulamin en"


def test_data_goes_to_var_dir_else_state_directory_else_the_user_data_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLEG_VAR_DIR")
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    home = load_settings(secret_key=TEST_SECRET).var_dir
    assert not home.is_relative_to(PROJECT_ROOT) and not home.is_relative_to(shipped_dir())
    assert home.name == "mleg"
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'state'}:{tmp_path / 'other'}")
    assert load_settings(secret_key=TEST_SECRET).var_dir == tmp_path / "state"
    monkeypatch.setenv("MLEG_VAR_DIR", str(tmp_path / "chosen"))
    assert load_settings(secret_key=TEST_SECRET).var_dir == tmp_path / "chosen"


def test_a_settings_file_in_the_config_dir_replaces_the_shipped_one(installed: Path) -> None:
    (installed / "mleg.toml").write_text('[university]\nname = "Politechnika Testowa"\n', encoding="utf-8")
    settings = load_settings()
    assert settings.university.name == "Politechnika Testowa"
    assert settings.mode == "production"  # the shipped file's `mode = "demo"` is not read any more


# --- one error line, naming the file and the setting ------------------------------------

def _problem(tmp_path: Path, folder: Path) -> str:
    """`mleg status` with this config folder: exit 2 and a single line on stderr."""
    env = cli_environment(tmp_path, f"sqlite:///{tmp_path / 'var' / 'mleg.db'}", MLEG_CONFIG_DIR=str(folder))
    result = run(["status"], env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0, result.stderr
    return result.stderr


@pytest.mark.parametrize("breakage", ["not TOML", "not UTF-8", "dangling link"])
@pytest.mark.process
def test_an_unreadable_override_is_one_line_naming_file_and_setting(breakage: str, tmp_path: Path) -> None:
    folder = tmp_path / "etc-mleg"
    (folder / "faq").mkdir(parents=True)
    target = folder / "faq" / "pl.toml"
    if breakage == "not TOML":
        target.write_text("[[entry]\n", encoding="utf-8")
    elif breakage == "not UTF-8":
        target.write_bytes(b'answer = "\xff"\n')
    else:
        target.symlink_to(tmp_path / "gone.toml")
    message = _problem(tmp_path, folder)
    assert str(target) in message and "MLEG_CONFIG_DIR" in message


def test_files_the_product_does_not_read_are_left_alone(tmp_path: Path, installed: Path) -> None:
    # /etc/mleg also holds the unit's environment file (secrets, root only): never opened.
    (installed / "mleg.env").symlink_to(tmp_path / "root-only")
    (installed / "README").write_bytes(b"\xff\xfe")
    (installed / "faq").mkdir()
    (installed / "faq" / ".pl.toml.swp").write_bytes(b"\xff")
    check_files(load_settings())


@pytest.mark.process
def test_a_config_dir_that_does_not_exist_is_named(tmp_path: Path) -> None:
    message = _problem(tmp_path, tmp_path / "etc-mlge")
    assert f"MLEG_CONFIG_DIR {tmp_path / 'etc-mlge'}: no such folder" in message


def test_a_data_folder_that_cannot_be_made_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.delenv("MLEG_VAR_DIR")
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "a-file" / "mleg"))
    settings = load_settings(secret_key=TEST_SECRET, database_url=f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ConfigurationError, match=r"a-file/mleg: cannot create the data folder .*; from STATE_DIR"):
        check_files(settings)
    monkeypatch.setenv("MLEG_VAR_DIR", str(tmp_path / "a-file" / "var"))
    with pytest.raises(ConfigurationError, match="from MLEG_VAR_DIR"):
        check_files(load_settings(secret_key=TEST_SECRET))


@pytest.mark.process
def test_a_missing_certificate_file_is_named(tmp_path: Path) -> None:
    env = cli_environment(tmp_path, f"sqlite:///{tmp_path / 'var' / 'mleg.db'}",
                          MLEG_SMTP__CA_FILE=str(tmp_path / "ca.pem"))
    result = run(["status"], env)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: MLEG_SMTP__CA_FILE {tmp_path / 'ca.pem'}: no such file"


def test_a_file_gone_after_the_start_is_named_with_its_setting(installed: Path) -> None:
    settings = load_settings()
    gone = installed / "faq" / "pl.toml"
    problem = problem_with(settings, FileNotFoundError(2, os.strerror(2), str(gone)))
    assert problem is not None and str(gone) in str(problem) and "MLEG_CONFIG_DIR" in str(problem)
    shipped = shipped_dir() / "terms"
    problem = problem_with(settings, FileNotFoundError(2, os.strerror(2), str(shipped)))
    assert problem is not None and "reinstall" in str(problem)
    # Any other file is not a configuration problem: a defect keeps its traceback.
    assert problem_with(settings, FileNotFoundError(2, os.strerror(2), "/nonexistent/elsewhere")) is None
