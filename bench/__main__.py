"""Runs every benchmark module's `main()` with the arguments given (e.g. `--rows 100000 --db sqlite`)."""

from __future__ import annotations

import importlib
import sys

from bench import MODULES
from bench.targets import summary


def main() -> None:
    for name in MODULES:
        print(f"== {name}")
        importlib.import_module(name).main(sys.argv[1:])
    print(summary())


if __name__ == "__main__":
    main()
