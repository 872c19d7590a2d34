"""Where the shipped texts and defaults are read from, and where the data goes.

Texts and defaults (terms, message catalogs, FAQ, the default settings file, the demo
register) ship inside the package as `core._config` (the source tree's `config/`, see
setup.py) and are found with `importlib.resources`. An installation overrides them file by
file from its own folder, MLEG_CONFIG_DIR (e.g. /etc/mleg): its `faq/pl.toml` is read
instead of the shipped one, and a file only it has (a new terms version, a new catalog
file) is read besides the shipped ones. Readers take "layers", folders searched in order,
the installation's first.

Data (the SQLite database, the local Maildir) lives in MLEG_VAR_DIR, else in systemd's
STATE_DIRECTORY (a unit with `StateDirectory=`), else in the user's data directory; never
inside the installed package.

A file the product needs that is missing or unreadable is a ConfigurationError naming the
file and the setting that points at it (`check_files` at start; `problem_with` for a read
that fails later).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Sequence
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from core.app.errors import ConfigurationError

if TYPE_CHECKING:
    from core.app.settings import Settings

__all__ = [
    "SHIPPED_PACKAGE",
    "Layers",
    "check_files",
    "default_var_dir",
    "find",
    "glob",
    "layers_of",
    "problem_with",
    "shipped_dir",
    "var_dir_setting",
]

SHIPPED_PACKAGE = "core._config"
SHIPPED = f"the files shipped in the package ({SHIPPED_PACKAGE}: reinstall mleg, or put the file in MLEG_CONFIG_DIR)"
# One folder, or folders searched in order (the installation's first, then the shipped ones).
Layers = Path | Sequence[Path]
# Python's byte-code beside config/__init__.py (which makes the shipped folder a package).
_SKIPPED_FOLDERS = {"__pycache__"}
# The kinds of file the product reads from a config folder. Anything else there is not ours
# (/etc/mleg/mleg.env holds the secrets, readable by root alone) and is never opened.
CONFIG_SUFFIXES = (".toml", ".md", ".csv")


def shipped_dir() -> Path:
    """The shipped folder. pip unpacks a wheel, so it is a real folder (terms are watched for changes)."""
    try:
        root = files(SHIPPED_PACKAGE)
    except ModuleNotFoundError as exc:
        # An editable install made before config/ became a package does not map it yet.
        raise ConfigurationError(
            f"the package's texts ({SHIPPED_PACKAGE}) are not installed: reinstall mleg "
            "(in a source checkout: `make`, or `pip install -e .`)") from exc
    if not isinstance(root, Path):
        raise ConfigurationError(
            f"the package's texts ({SHIPPED_PACKAGE}) are not in a folder ({root}): install the wheel with pip")
    return root


def default_var_dir() -> Path:
    """Where data goes when MLEG_VAR_DIR is not set: systemd's STATE_DIRECTORY, else the user's data dir."""
    state = os.environ.get("STATE_DIRECTORY", "").strip()
    if state:
        # systemd passes one path per StateDirectory= entry, separated by colons; ours is the first.
        return Path(state.split(":")[0])
    from platformdirs import user_data_path

    return user_data_path("mleg", appauthor=False)


def var_dir_setting(settings: Settings) -> str:
    """What chose the data folder, for an error message."""
    if "var_dir" in settings.model_fields_set:
        return "MLEG_VAR_DIR"
    if os.environ.get("STATE_DIRECTORY", "").strip():
        return "STATE_DIRECTORY (systemd's StateDirectory=; set MLEG_VAR_DIR to choose another)"
    return "the user's data directory (MLEG_VAR_DIR not set)"


def layers_of(config_dir: Path | None, folder: str = "") -> list[Path]:
    """`folder` in the installation's config folder (when set, and not the shipped one), then in the shipped one."""
    shipped = shipped_dir()
    layers = [] if config_dir is None or _same(config_dir, shipped) else [config_dir]
    layers.append(shipped)
    return [layer / folder if folder else layer for layer in layers]


def _as_list(layers: Layers) -> list[Path]:
    return [layers] if isinstance(layers, Path) else list(layers)


def find(layers: Layers, name: str) -> Path:
    """`name` in the first layer that has it; the last layer's path (for the error) when none has it."""
    candidates = [layer / name for layer in _as_list(layers)]
    return next((path for path in candidates if path.is_file()), candidates[-1])


def glob(layers: Layers, pattern: str) -> list[Path]:
    """The files matching `pattern` over the layers, by name; a name in an earlier layer hides it in later ones."""
    chosen: dict[str, Path] = {}
    for layer in _as_list(layers):
        for path in layer.glob(pattern):
            chosen.setdefault(path.name, path)
    return [chosen[name] for name in sorted(chosen)]


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _config_files(layer: Path) -> Iterator[tuple[str, Path]]:
    """(relative name, path) of every file under `layer` the product may read."""
    for directory, folders, names in os.walk(layer, onerror=_raise):
        folders[:] = sorted(f for f in folders if f not in _SKIPPED_FOLDERS and not f.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or not name.endswith(CONFIG_SUFFIXES):
                continue
            path = Path(directory) / name
            yield path.relative_to(layer).as_posix(), path


def _raise(exc: OSError) -> None:
    raise exc


def _check_readable(path: Path, setting: str) -> None:
    """Read it as the product will: TOML parsed, text decoded as UTF-8."""
    try:
        text = path.read_bytes().decode("utf-8")
        if path.suffix == ".toml":
            tomllib.loads(text)
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read it ({exc.strerror}); from {setting}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path}: not UTF-8 (byte offset {exc.start}); from {setting}") from exc
    except tomllib.TOMLDecodeError as exc:
        # The decoder names line and column only, never the offending text.
        raise ConfigurationError(f"{path} is not valid TOML: {exc}; from {setting}") from exc


def check_files(settings: Settings) -> None:
    """At start: every config file readable (the effective one of each name), the data folder usable,
    each file a setting names there. The first problem is a ConfigurationError naming file and setting."""
    shipped = shipped_dir()
    override = settings.config_dir
    layers: list[tuple[Path, str]] = []
    if not _same(override, shipped):
        if not override.is_dir():
            raise ConfigurationError(f"MLEG_CONFIG_DIR {override}: no such folder")
        layers.append((override, "MLEG_CONFIG_DIR"))
    if not shipped.is_dir():
        raise ConfigurationError(f"{shipped}: no such folder; {SHIPPED}")
    layers.append((shipped, SHIPPED))
    seen: set[str] = set()
    for layer, setting in layers:
        try:
            for name, path in _config_files(layer):
                if name not in seen:
                    seen.add(name)
                    _check_readable(path, setting)
        except OSError as exc:
            where = exc.filename or layer
            raise ConfigurationError(f"{where}: cannot read it ({exc.strerror}); from {setting}") from exc
    _check_var_dir(settings)
    for named, setting in _named_files(settings):
        if not Path(named).is_file():
            raise ConfigurationError(f"{setting} {named}: no such file")
        _check_readable(Path(named), setting)


def _named_files(settings: Settings) -> list[tuple[str, str]]:
    """Files a setting names that are read at start (certificate authorities for the mail servers)."""
    named = [(settings.smtp.ca_file, "MLEG_SMTP__CA_FILE"), (settings.imap.ca_file, "MLEG_IMAP__CA_FILE")]
    return [(path, setting) for path, setting in named if path]


def _check_var_dir(settings: Settings) -> None:
    var_dir = settings.var_dir
    try:
        var_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"{var_dir}: cannot create the data folder ({exc.strerror}); from {var_dir_setting(settings)}") from exc
    if not os.access(var_dir, os.W_OK | os.X_OK):
        raise ConfigurationError(f"{var_dir}: the data folder is not writable; from {var_dir_setting(settings)}")


def problem_with(settings: Settings, exc: OSError) -> ConfigurationError | None:
    """A failed read of a file under a config layer or the data folder as one clear error; None for any other file."""
    if not exc.filename:
        return None
    path = Path(os.fsdecode(exc.filename))
    # The shipped folder first: it is also config_dir when MLEG_CONFIG_DIR is not set.
    owners = [(shipped_dir(), SHIPPED), (settings.config_dir, "MLEG_CONFIG_DIR"),
              (settings.var_dir, var_dir_setting(settings))]
    for root, setting in owners:
        if path == root or _is_under(path, root):
            return ConfigurationError(f"{path}: {exc.strerror or exc}; from {setting}")
    return None


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (OSError, ValueError):
        return False
    return True
