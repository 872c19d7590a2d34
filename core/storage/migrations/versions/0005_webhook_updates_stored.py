"""webhook updates stored before they are acknowledged

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 08:52:40.990125

stored_update: what the Telegram webhook received, stored before it answered 200, until it
is handled (bot.webhook); webhook_state: the webhook's health for `mleg status`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import core.storage.models

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('stored_update',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('update_id', sa.BigInteger(), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=True),
    sa.Column('received_at', core.storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('handled_at', core.storage.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('channel', 'update_id', name='uq_stored_update')
    )
    with op.batch_alter_table('stored_update', schema=None) as batch_op:
        batch_op.create_index('ix_stored_update_waiting', ['channel', 'handled_at', 'update_id'], unique=False)

    op.create_table('webhook_state',
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('url', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('set_at', core.storage.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('set_error', sa.Text(), nullable=True),
    sa.Column('last_received_at', core.storage.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('info_checked_at', core.storage.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('info_pending', sa.Integer(), nullable=True),
    sa.Column('info_error_at', core.storage.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('info_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('channel')
    )


def downgrade() -> None:
    op.drop_table('webhook_state')
    with op.batch_alter_table('stored_update', schema=None) as batch_op:
        batch_op.drop_index('ix_stored_update_waiting')

    op.drop_table('stored_update')
