"""The one packaging detail pyproject.toml cannot say: `config/` goes into the wheel as `core._config`.

The shipped texts and defaults (terms, message catalogs, FAQ, the default settings file, the demo
register) live in `config/` beside the packages, where a maintainer edits them. A wheel can only
carry files inside a package, and `[tool.setuptools.packages.find]` cannot be combined with a
package mapped from another folder, so the package list is made here: every package found under
core/, bot/, mail/ and web/, plus `core._config` read from `config/`. Every file under `config/` goes in
(a glob, not a list): a new catalog file needs no change here. The product reads them with
`importlib.resources` (core/app/config_files.py); an editable install maps `core._config` to the same
folder, so the source tree and an installed wheel read the same way.
"""

from setuptools import find_namespace_packages, setup

# config/ and each folder in it (messages/pl, terms ...) as a package of data files, found, not listed.
FOLDERS = find_namespace_packages(where="config", exclude=["*__pycache__*"])
CONFIG = ["core._config", *(f"core._config.{name}" for name in FOLDERS)]

setup(
    packages=[*find_namespace_packages(include=["core*", "bot*", "mail*", "web*"], exclude=["*__pycache__*"]), *CONFIG],
    package_dir={"core._config": "config"},
    package_data={
        "core.storage": ["migrations/*.py", "migrations/versions/*.py", "migrations/*.mako"],
        "web": ["templates/*.html", "static/*"],
        **{package: ["*"] for package in CONFIG},
    },
)
