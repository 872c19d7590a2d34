"""Autogenerate a migration from the models against a scratch SQLite upgraded to head.

Usage: .venv/bin/python scripts/new-migration.py "message"
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from core.storage.db import alembic_config, make_engine, upgrade

with tempfile.TemporaryDirectory() as tmp:
    engine = make_engine(f"sqlite:///{Path(tmp) / 'scratch.db'}")
    upgrade(engine)
    command.revision(alembic_config(engine), message=sys.argv[1], autogenerate=True)
