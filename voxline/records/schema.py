"""The call store's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Times are seconds since the epoch (double precision): they sort, compare and
travel through JSON without time zone handling. No foreign keys: a call's turns
and events may reach the database before or after its row (the writer's backlog
coalesces and reorders), and deleting a call deletes its rows explicitly.
The migrations in ``migrations/versions`` create exactly these tables.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["metadata", "calls", "turns", "events", "outbox"]

metadata = sa.MetaData()

calls = sa.Table(
    "calls", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("transport", sa.String(32), nullable=False),
    sa.Column("peer", sa.String(256)),
    sa.Column("agent", sa.String(32), nullable=False),
    sa.Column("node", sa.String(128), nullable=False),  # the process that carried it (lost calls are its own)
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
    sa.Index("ix_calls_tenant_started", "tenant", "started_at", "id"),
    sa.Index("ix_calls_started", "started_at"),
    sa.Index("ix_calls_node_open", "node", "ended_at"),
)

turns = sa.Table(
    "turns", metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("turn", sa.Integer, primary_key=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("caller_text", sa.Text),
    sa.Column("agent_text", sa.Text),
    sa.Column("heard_text", sa.Text),  # what the caller heard of the reply
    sa.Column("heard_complete", sa.Boolean),
    sa.Column("barged_in", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("latency", sa.JSON),  # the turn's marks and segments (the agent's latency event)
)

events = sa.Table(
    "call_events", metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("turn", sa.Integer, nullable=False, server_default="0"),
    sa.Column("data", sa.JSON, nullable=False),
)

# Webhook deliveries, durable: written with the call's rows, sent by the
# dispatcher (webhooks.py), retried, and kept as dead letters when they give up.
outbox = sa.Table(
    "webhook_outbox", metadata,
    sa.Column("id", sa.String(48), primary_key=True),  # <call id>-<event seq>: a replay writes it once
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("call_id", sa.String(64), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending | delivered | dead
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_at", sa.Float, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("delivered_at", sa.Float),
    sa.Index("ix_outbox_due", "state", "next_at"),
    sa.Index("ix_outbox_tenant_state", "tenant", "state", "created_at"),
)
