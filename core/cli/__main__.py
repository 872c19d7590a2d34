"""`python -m core.cli` is `mleg`."""

from core.cli import main

main()
