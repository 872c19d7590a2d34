"""The shipped texts and defaults, installed as the package `core._config` (see setup.py).

Only data lives here; this file makes the folder importable so `importlib.resources` finds it
in a wheel and in an editable install alike. An installation overrides any file from its own
folder (MLEG_CONFIG_DIR), file by file: see core/app/config_files.py.
"""
