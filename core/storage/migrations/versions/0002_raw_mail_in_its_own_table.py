"""raw mail in its own table

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 18:23:27.764849

The bytes of each support mail move from inbound_mail.raw to inbound_mail_raw, where the
blob ends the row: SQLite then writes and reads it in pieces (core.storage.blobs) instead of
copying 25 MB several times in memory.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('inbound_mail_raw',
    sa.Column('inbound_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['inbound_id'], ['inbound_mail.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('inbound_id')
    )
    op.execute("INSERT INTO inbound_mail_raw (inbound_id, raw) SELECT id, raw FROM inbound_mail WHERE raw IS NOT NULL")
    # Not batch mode: rebuilding inbound_mail on SQLite would drop the old table, and with
    # foreign keys on that cascades to the rows just copied. SQLite >= 3.35 drops in place.
    op.execute("ALTER TABLE inbound_mail DROP COLUMN raw")


def downgrade() -> None:
    op.add_column('inbound_mail', sa.Column('raw', sa.LargeBinary(), nullable=True))
    op.execute("UPDATE inbound_mail SET raw = (SELECT r.raw FROM inbound_mail_raw r WHERE r.inbound_id = inbound_mail.id)")
    op.drop_table('inbound_mail_raw')
