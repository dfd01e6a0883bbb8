"""The records of a running service: store, writer, recorders, retention.

``Records`` exists from the app's creation, so calls admitted before the
database is reachable are recorded too (their rows wait in the writer's
backlog). ``start`` opens the store in the background, retrying while the
database is unreachable; once the migrations are applied it ends this node's
calls a previous process left open as "lost", and only then lets the writer
write (so no call of this process is taken for a lost one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .recorder import CallRecorder, Recorders, SessionLike
from .store import CallStore, StoreConfig, open_store
from .webhooks import Dispatcher
from .writer import RecordWriter

__all__ = ["Records", "RecordsConfig", "StoreUnavailable"]

log = logging.getLogger(__name__)

OPEN_RETRY = (0.5, 1.0, 2.0, 5.0)  # s between attempts to reach the database at start
RETENTION_PERIOD = 3600.0  # s between retention sweeps
DAY = 86400.0


class StoreUnavailable(RuntimeError):
    """The database has not been reached yet (or the store is closed)."""


@dataclass(frozen=True, slots=True)
class RecordsConfig:
    store: StoreConfig
    backlog: int = 10_000  # rows waiting for the database, at most
    retention_days: float = 0.0  # 0: keep records forever
    retention_period: float = RETENTION_PERIOD
    recordings: str | None = None  # the directory of the calls' recordings (<call id>.wav)
    webhook_url: str = ""  # "": no webhooks
    webhook_secret: str = ""


class _StoreSink:
    """The writer's sink: the store once it is open (until then every write fails, rows wait)."""

    def __init__(self) -> None:
        self.store: CallStore | None = None

    async def write(self, call_rows: list[dict[str, Any]], turn_rows: list[dict[str, Any]],
                    event_rows: list[dict[str, Any]], outbox_rows: list[dict[str, Any]]) -> None:
        if self.store is None:
            raise StoreUnavailable("the database has not been reached yet")
        await self.store.write(call_rows, turn_rows, event_rows, outbox_rows)


class Records:
    def __init__(self, config: RecordsConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._sink = _StoreSink()
        self.writer = RecordWriter(self._sink, config.backlog)
        self.recorders = Recorders(self.writer, config.store.node, webhooks=bool(config.webhook_url))
        self.dispatcher = Dispatcher(config.webhook_url, config.webhook_secret) if config.webhook_url else None
        self._tasks: list[asyncio.Task[None]] = []
        self.opened = asyncio.Event()
        self.lost_on_start = 0
        self.purged = 0
        self.on_purge: list[Callable[[list[str]], None]] = [self._delete_recordings]

    @property
    def store(self) -> CallStore:
        if self._sink.store is None:
            raise StoreUnavailable("the call store is not open (the database is unreachable)")
        return self._sink.store

    def watch(self, session: SessionLike) -> CallRecorder:
        return self.recorders.watch(session)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.writer.start()
        self._tasks.append(loop.create_task(self._open(), name="records-open"))

    async def _open(self) -> None:
        attempt = 0
        while True:
            try:
                store = await open_store(self.config.store)
                break
            except Exception as exc:
                delay = OPEN_RETRY[min(attempt, len(OPEN_RETRY) - 1)]
                if attempt == 0 or attempt % 20 == 0:
                    log.warning("records: cannot open the call store (%s: %s); retrying", type(exc).__name__, exc)
                attempt += 1
                await asyncio.sleep(delay)
        try:
            self.lost_on_start = await store.end_lost(self._clock())
        except Exception:
            log.exception("records: ending the calls a previous run left open failed")
        if self.lost_on_start:
            log.warning("records: %d calls left open by a previous run ended as lost", self.lost_on_start)
        self._sink.store = store
        self.opened.set()
        log.info("records: call store open (%s)", store.engine.dialect.name)
        if self.dispatcher is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self.dispatcher.run(lambda: self.store),
                                                                      name="records-webhooks"))
        if self.config.retention_days > 0:
            self._tasks.append(asyncio.get_running_loop().create_task(self._retain(), name="records-retention"))

    def recording(self, call_id: str) -> Path | None:
        """The call's recording file, if it has one."""
        if self.config.recordings is None:
            return None
        path = Path(self.config.recordings) / f"{call_id}.wav"
        return path if path.is_file() else None

    def _delete_recordings(self, call_ids: list[str]) -> None:
        for call_id in call_ids:
            path = self.recording(call_id)
            if path is not None:
                try:
                    path.unlink()
                except OSError as exc:
                    log.warning("records: deleting recording %s failed: %s", path, exc)

    async def delete(self, call_id: str, tenant: str) -> bool:
        """Delete a call's record and its recording."""
        if not await self.store.delete(call_id, tenant):
            return False
        self._delete_recordings([call_id])
        return True

    async def purge(self) -> list[str]:
        """Delete the records older than ``retention_days`` now; their ids."""
        before = self._clock() - self.config.retention_days * DAY
        gone = await self.store.purge(before)
        self.purged += len(gone)
        for hook in self.on_purge:
            hook(gone)
        if gone:
            log.info("records: retention deleted %d calls", len(gone))
        return gone

    async def _retain(self) -> None:
        while True:
            try:
                await self.purge()
            except Exception as exc:  # the database is away: next period
                log.warning("records: retention sweep failed: %s", exc)
            await asyncio.sleep(self.config.retention_period)

    async def close(self, timeout: float = 5.0) -> None:
        opening = self._tasks[0] if self._tasks else None
        if opening is not None and not opening.done() and not self.opened.is_set():
            # Let a store being opened finish (its driver's thread must not outlive the loop).
            await asyncio.wait({opening}, timeout=min(timeout, 2.0))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.recorders.close(min(2.0, timeout))
        await self.writer.close(timeout)
        if self._sink.store is not None:
            await self._sink.store.close()
            self._sink.store = None
