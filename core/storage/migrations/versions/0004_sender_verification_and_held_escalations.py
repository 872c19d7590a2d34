"""sender verification and held escalations

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 08:52:59.788885

support_thread and support_message record whether an e-mail's From address was proven by
the receiving server (core.support.mail_sender); support_thread records why an escalation was kept
from the staff room (the per-sender and per-domain caps). Nullable: rows from before are
"not known", and shown so. ix_outbox_channel_created serves those caps: they count one
channel's last day of the outbox, matching addresses by pattern (`+tag` variants).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Not batch mode: rebuilding support_thread on SQLite would drop the old table, and with
    # foreign keys on that cascades to its messages. ADD/DROP COLUMN work in place.
    op.add_column('support_message', sa.Column('sender_verified', sa.Boolean(), nullable=True))
    op.add_column('support_thread', sa.Column('sender_verified', sa.Boolean(), nullable=True))
    op.add_column('support_thread', sa.Column('escalation_held', sa.String(length=120), nullable=True))
    op.create_index('ix_outbox_channel_created', 'outbox', ['channel', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_channel_created', table_name='outbox')
    op.drop_column('support_thread', 'escalation_held')
    op.drop_column('support_thread', 'sender_verified')
    op.drop_column('support_message', 'sender_verified')
