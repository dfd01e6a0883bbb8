"""Alembic migrations of the call store, applied at start (``store.migrate``)."""
