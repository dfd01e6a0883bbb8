"""The webhook outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", sa.Float),
    )
    op.create_index("ix_outbox_due", "webhook_outbox", ["state", "next_at"])
    op.create_index("ix_outbox_tenant_state", "webhook_outbox", ["tenant", "state", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_tenant_state", "webhook_outbox")
    op.drop_index("ix_outbox_due", "webhook_outbox")
    op.drop_table("webhook_outbox")
