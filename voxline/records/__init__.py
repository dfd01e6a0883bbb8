"""Call records: every session kept in a database (SQLite by default, PostgreSQL
by URL), written off the event loop's critical path from the session's events."""

from .service import Records, RecordsConfig, StoreUnavailable
from .store import BadCursor, CallStore, StoreConfig, open_store

__all__ = ["Records", "RecordsConfig", "StoreUnavailable", "BadCursor", "CallStore", "StoreConfig", "open_store"]
