"""outbox: an index for the daily cap on automatic answers

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 15:00:00

The mailbox's cap on automatic answers per sender and day (core.support.mailbox_rules) counts
an address with its `+tag` and upper-case variants, by lower(recipient). No index served that:
every mail read the whole day's e-mail answers (ix_outbox_channel_created), so a busy day cost
each mail more than the last. ix_outbox_recipient_key is on lower(recipient) and created_at;
on PostgreSQL in the "C" collation, the byte order in which the cap's query narrows a
`local+%` pattern to a range (the same expression the query compares).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    collate = ' COLLATE "C"' if op.get_bind().dialect.name == "postgresql" else ""
    op.create_index('ix_outbox_recipient_key', 'outbox', [sa.text(f'lower(recipient){collate}'), 'created_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_recipient_key', table_name='outbox')
