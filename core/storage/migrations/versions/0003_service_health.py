"""service health

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 09:10:00

The last known state of the connections a server keeps (the mailbox's OAuth2 token and login,
SMTP's login), so `mleg status` can say whether they work.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.storage.models import UTCDateTime

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('service_health',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('checked_at', UTCDateTime(), nullable=False),
    sa.Column('since', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('service_health')
