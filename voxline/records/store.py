"""The call store: one code path over SQLite (WAL, the default, in the data
directory) and PostgreSQL, through SQLAlchemy Core on asyncio (aiosqlite,
asyncpg). ``open_store`` applies the Alembic migrations before anything else.

Writes are idempotent (upserts keyed by call, turn and event sequence), so the
writer (writer.py) may replay a batch that failed halfway.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .schema import calls, events, outbox, turns

__all__ = ["CallStore", "StoreConfig", "Page", "open_store", "engine_url", "BadCursor", "DB_FILE"]

log = logging.getLogger(__name__)

DB_FILE = "voxline.db"
MIGRATIONS = Path(__file__).with_name("migrations")
CONNECT_TIMEOUT = 5.0  # s to reach PostgreSQL before a write counts as failed
MAX_LIMIT = 200

_CALL_FIELDS = tuple(c.name for c in calls.columns)
_TURN_FIELDS = tuple(c.name for c in turns.columns)


class BadCursor(ValueError):
    """A pagination cursor this store did not hand out."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str  # a SQLAlchemy URL with its async driver
    node: str  # this process's name in the calls it records

    @classmethod
    def from_service(cls, data_dir: str, database_url: str, node: str = "") -> "StoreConfig":
        return cls(engine_url(data_dir, database_url), node or default_node(data_dir))


def default_node(data_dir: str) -> str:
    """The host and data directory: a process restarted on the same data finds its own calls."""
    return f"{socket.gethostname()}:{os.path.abspath(data_dir)}"[:128]


def engine_url(data_dir: str, database_url: str) -> str:
    """``database_url`` (postgresql://, sqlite:///) with its async driver; empty: SQLite in ``data_dir``."""
    if not database_url:
        path = Path(data_dir) / DB_FILE
        return f"sqlite+aiosqlite:///{path.resolve()}"
    scheme, sep, rest = database_url.partition("://")
    if not sep:
        raise ValueError(f"database_url must be postgresql://... or sqlite:///..., not {database_url!r}")
    base = scheme.split("+")[0]
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    raise ValueError(f"database_url must be postgresql://... or sqlite:///..., not {scheme}://")


@dataclass(frozen=True, slots=True)
class Page:
    calls: list[dict[str, Any]]
    cursor: str | None  # the next page's, None on the last


def _encode_cursor(started_at: float, call_id: str) -> str:
    return base64.urlsafe_b64encode(f"{started_at!r}|{call_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, call_id = raw.partition("|")
        if not call_id:
            raise ValueError(raw)
        return float(at), call_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadCursor("cursor is not one this service handed out") from exc


class CallStore:
    def __init__(self, engine: AsyncEngine, node: str) -> None:
        self.engine = engine
        self.node = node
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def close(self) -> None:
        await self.engine.dispose()

    # -- writes ------------------------------------------------------------------

    async def write(self, call_rows: Iterable[Mapping[str, Any]], turn_rows: Iterable[Mapping[str, Any]],
                    event_rows: Iterable[Mapping[str, Any]], outbox_rows: Iterable[Mapping[str, Any]] = ()) -> None:
        """Upsert calls and turns, add events and webhooks (kept if already there): one transaction."""
        call_rows, turn_rows, event_rows = list(call_rows), list(turn_rows), list(event_rows)
        outbox_rows = list(outbox_rows)
        async with self.engine.begin() as conn:
            if call_rows:
                await self._upsert(conn, calls, call_rows, ("id",))
            if turn_rows:
                await self._upsert(conn, turns, turn_rows, ("call_id", "turn"))
            if event_rows:
                stmt = self._insert(events).on_conflict_do_nothing(index_elements=["call_id", "seq"])
                await conn.execute(stmt, event_rows)
            if outbox_rows:
                stmt = self._insert(outbox).on_conflict_do_nothing(index_elements=["id"])
                await conn.execute(stmt, outbox_rows)

    async def _upsert(self, conn: AsyncConnection, table: sa.Table, rows: list[Mapping[str, Any]],
                      keys: tuple[str, ...]) -> None:
        # One statement per set of columns: executemany needs the same keys in every row.
        by_shape: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
        for row in rows:
            by_shape.setdefault(tuple(sorted(row)), []).append(row)
        for shape, group in by_shape.items():
            stmt = self._insert(table)
            update = {name: stmt.excluded[name] for name in shape if name not in keys}
            stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=update) if update else \
                stmt.on_conflict_do_nothing(index_elements=list(keys))
            await conn.execute(stmt, group)

    async def end_lost(self, now: float) -> int:
        """Calls this node left open (the process died mid-call) end as "lost"."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                calls.update().where(calls.c.node == self.node, calls.c.ended_at.is_(None))
                .values(state="ended", end_reason="lost", ended_at=sa.func.coalesce(calls.c.updated_at, now),
                        updated_at=now))
            return int(result.rowcount or 0)

    async def delete(self, call_id: str, tenant: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(calls.delete().where(calls.c.id == call_id, calls.c.tenant == tenant))
            if not result.rowcount:
                return False
            await conn.execute(turns.delete().where(turns.c.call_id == call_id))
            await conn.execute(events.delete().where(events.c.call_id == call_id))
            return True

    async def purge(self, before: float, batch: int = 500) -> list[str]:
        """Delete ended calls that started before ``before``; their ids (for their recordings)."""
        gone: list[str] = []
        while True:
            async with self.engine.begin() as conn:
                ids = list((await conn.execute(
                    sa.select(calls.c.id).where(calls.c.started_at < before, calls.c.ended_at.is_not(None))
                    .limit(batch))).scalars())
                if not ids:
                    return gone
                await conn.execute(events.delete().where(events.c.call_id.in_(ids)))
                await conn.execute(outbox.delete().where(outbox.c.call_id.in_(ids), outbox.c.state != "pending"))
                await conn.execute(turns.delete().where(turns.c.call_id.in_(ids)))
                await conn.execute(calls.delete().where(calls.c.id.in_(ids)))
            gone += ids

    # -- reads -------------------------------------------------------------------

    async def page(self, tenant: str, *, since: float | None = None, until: float | None = None,
                   agent: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
        """This tenant's calls, newest first; ``cursor`` continues where a page stopped."""
        limit = max(1, min(limit, MAX_LIMIT))
        q = sa.select(calls).where(calls.c.tenant == tenant)
        if since is not None:
            q = q.where(calls.c.started_at >= since)
        if until is not None:
            q = q.where(calls.c.started_at < until)
        if agent:
            q = q.where(calls.c.agent == agent)
        if cursor:
            at, call_id = _decode_cursor(cursor)
            q = q.where(sa.or_(calls.c.started_at < at, sa.and_(calls.c.started_at == at, calls.c.id < call_id)))
        q = q.order_by(calls.c.started_at.desc(), calls.c.id.desc()).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = [_plain(r) for r in await conn.execute(q)]
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = _encode_cursor(rows[-1]["started_at"], rows[-1]["id"]) if more else None
        return Page([_public_call(r) for r in rows], next_cursor)

    async def get(self, call_id: str, tenant: str) -> dict[str, Any] | None:
        """The call with its turns and events, or None (also for another tenant's)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(calls).where(calls.c.id == call_id, calls.c.tenant == tenant))).first()
            if row is None:
                return None
            turn_rows = await conn.execute(sa.select(turns).where(turns.c.call_id == call_id).order_by(turns.c.turn))
            event_rows = await conn.execute(
                sa.select(events).where(events.c.call_id == call_id).order_by(events.c.seq))
            out = _public_call(_plain(row))
            out["turns"] = [_without(_plain(r), "call_id") for r in turn_rows]
            out["events"] = [_without(_plain(r), "call_id") for r in event_rows]
            return out

    async def exists(self, call_id: str, tenant: str) -> bool:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(calls.c.id).where(calls.c.id == call_id,
                                                                  calls.c.tenant == tenant))).first()
            return row is not None

    # -- the webhook outbox --------------------------------------------------------

    async def due_webhooks(self, now: float, limit: int = 20) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(outbox).where(outbox.c.state == "pending", outbox.c.next_at <= now)
                                      .order_by(outbox.c.next_at, outbox.c.id).limit(limit))
            return [_plain(r) for r in rows]

    async def webhook_done(self, delivery_id: str, *, attempts: int, now: float, next_at: float | None,
                           error: str | None) -> None:
        """A delivery attempt's outcome: delivered (no error), to retry at ``next_at``, or dead."""
        if error is None:
            values: dict[str, Any] = {"state": "delivered", "attempts": attempts, "delivered_at": now,
                                      "last_error": None}
        elif next_at is not None:
            values = {"attempts": attempts, "next_at": next_at, "last_error": error}
        else:
            values = {"state": "dead", "attempts": attempts, "last_error": error}
        async with self.engine.begin() as conn:
            await conn.execute(outbox.update().where(outbox.c.id == delivery_id).values(**values))

    async def dead_webhooks(self, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(outbox).where(outbox.c.tenant == tenant, outbox.c.state == "dead")
                                      .order_by(outbox.c.created_at.desc(), outbox.c.id).limit(limit))
            return [_without(_plain(r), "tenant") for r in rows]

    async def retry_webhook(self, delivery_id: str, tenant: str, now: float) -> bool:
        """A dead letter back in the outbox, due now, with its attempts counted afresh."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                outbox.update().where(outbox.c.id == delivery_id, outbox.c.tenant == tenant,
                                      outbox.c.state == "dead")
                .values(state="pending", attempts=0, next_at=now))
            return bool(result.rowcount)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))


def _plain(row: sa.Row[Any]) -> dict[str, Any]:
    # Column keys may be str subclasses (quoted_name), which orjson refuses.
    return {str(k): v for k, v in row._asdict().items()}


def _without(row: dict[str, Any], key: str) -> dict[str, Any]:
    row.pop(key, None)
    return row


def _public_call(row: dict[str, Any]) -> dict[str, Any]:
    row.pop("node", None)
    row.pop("updated_at", None)
    return row


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers never block the writer; NORMAL: a commit survives a process crash
    # (the WAL is in the OS's hands), not a power loss, which is the trade WAL is for.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url)
        sa_event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # pre_ping: a connection the server dropped (a restart) is replaced, not failed on.
    return create_async_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4, pool_timeout=CONNECT_TIMEOUT,
                               connect_args={"timeout": CONNECT_TIMEOUT, "command_timeout": 30})


def _upgrade(sync_conn: sa.Connection) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Apply every migration not yet applied (from an empty database: all of them)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def open_store(config: StoreConfig) -> CallStore:
    engine = make_engine(config.url)
    try:
        await migrate(engine)
    except BaseException:
        await engine.dispose()
        raise
    return CallStore(engine, config.node)
