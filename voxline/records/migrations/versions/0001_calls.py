"""Calls, their turns and their events.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("transport", sa.String(32), nullable=False),
        sa.Column("peer", sa.String(256)),
        sa.Column("agent", sa.String(32), nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("answered_at", sa.Float),
        sa.Column("ended_at", sa.Float),
        sa.Column("end_reason", sa.Text),
        sa.Column("turn_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("dtmf", sa.Text, nullable=False, server_default=""),
        sa.Column("barge_ins", sa.Integer, nullable=False, server_default="0"),
        sa.Column("transfers", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_calls_tenant_started", "calls", ["tenant", "started_at", "id"])
    op.create_index("ix_calls_started", "calls", ["started_at"])
    op.create_index("ix_calls_node_open", "calls", ["node", "ended_at"])
    op.create_table(
        "turns",
        sa.Column("call_id", sa.String(64), primary_key=True),
        sa.Column("turn", sa.Integer, primary_key=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
        sa.Column("caller_text", sa.Text),
        sa.Column("agent_text", sa.Text),
        sa.Column("heard_text", sa.Text),
        sa.Column("heard_complete", sa.Boolean),
        sa.Column("barged_in", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("latency", sa.JSON),
    )
    op.create_table(
        "call_events",
        sa.Column("call_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("turn", sa.Integer, nullable=False, server_default="0"),
        sa.Column("data", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("call_events")
    op.drop_table("turns")
    op.drop_index("ix_calls_node_open", "calls")
    op.drop_index("ix_calls_started", "calls")
    op.drop_index("ix_calls_tenant_started", "calls")
    op.drop_table("calls")
