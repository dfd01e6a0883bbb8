"""Alembic's environment: run on the connection the store hands over
(``config.attributes["connection"]``), never one of its own."""

from __future__ import annotations

from alembic import context

from voxline.records.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("voxline's migrations run through voxline.records.store.migrate, on its connection")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
