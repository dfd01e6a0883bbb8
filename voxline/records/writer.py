"""The store's writer: calls never wait for the database.

Recorders hand rows over synchronously (``call``, ``turn``, ``event``: a dict
update, no I/O); one task writes them in batches. A database that is down or
slow leaves them in a bounded backlog: a call's and a turn's latest state
replace the one waiting (so a call waiting costs one row however long it runs),
events queue in order. Past ``capacity`` rows the oldest events go first, then
the oldest turns, then the oldest calls, each counted. A failed batch goes back
into the backlog and is retried with backoff; writes are idempotent, so a batch
that was committed but whose answer was lost is harmless to write again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["RecordWriter", "WriterCollector", "Sink"]

log = logging.getLogger(__name__)

BATCH = 500  # events per transaction
FLUSH_DELAY = 0.2  # s: rows arriving together are written together
WRITE_TIMEOUT = 10.0  # s: a write slower than this counts as failed and is retried
BACKOFF = (0.5, 1.0, 2.0, 5.0)  # s between retries while the database is failing


class Sink(Protocol):
    async def write(self, call_rows: list[dict[str, Any]], turn_rows: list[dict[str, Any]],
                    event_rows: list[dict[str, Any]], outbox_rows: list[dict[str, Any]]) -> None: ...


class RecordWriter:
    def __init__(self, sink: Sink, capacity: int = 10_000, *, flush_delay: float = FLUSH_DELAY,
                 write_timeout: float = WRITE_TIMEOUT, backoff: tuple[float, ...] = BACKOFF,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sink = sink
        self.capacity = max(1, capacity)
        self.flush_delay = flush_delay
        self.write_timeout = write_timeout
        self.backoff = backoff
        self._clock = clock
        self._calls: dict[str, dict[str, Any]] = {}
        self._turns: dict[tuple[str, int], dict[str, Any]] = {}
        self._events: collections.deque[dict[str, Any]] = collections.deque()
        self._outbox: collections.deque[dict[str, Any]] = collections.deque()  # webhooks: dropped last
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight = 0  # rows of the batch being written
        self._failing = 0  # consecutive failed writes
        self.written = 0  # rows committed
        self.dropped = 0  # rows lost to the backlog's bound
        self.failures = 0  # failed writes
        self.last_error: str | None = None

    # -- the recorders' side (synchronous, never blocks) -------------------------

    def call(self, row: dict[str, Any]) -> None:
        key = row["id"]
        waiting = self._calls.pop(key, None)
        self._calls[key] = {**waiting, **row} if waiting else row  # moved to the newest end
        self._added()

    def turn(self, row: dict[str, Any]) -> None:
        key = (row["call_id"], row["turn"])
        waiting = self._turns.pop(key, None)
        self._turns[key] = {**waiting, **row} if waiting else row
        self._added()

    def event(self, row: dict[str, Any]) -> None:
        self._events.append(row)
        self._added()

    def webhook(self, row: dict[str, Any]) -> None:
        self._outbox.append(row)
        self._added()

    @property
    def waiting(self) -> int:
        return len(self._calls) + len(self._turns) + len(self._events) + len(self._outbox)

    @property
    def backlog(self) -> int:
        """Rows not yet committed: waiting, or in the write under way."""
        return self.waiting + self._inflight

    @property
    def healthy(self) -> bool:
        return self._failing == 0

    def _added(self) -> None:
        while self.waiting > self.capacity:
            if self._events:
                self._events.popleft()
            elif self._turns:
                del self._turns[next(iter(self._turns))]
            elif self._outbox:
                self._outbox.popleft()
            else:
                del self._calls[next(iter(self._calls))]
            self.dropped += 1
        self._wake.set()

    # -- the writing task ----------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="records-writer")

    async def close(self, timeout: float = 5.0) -> None:
        """Stop; write what is waiting if the database lets us within ``timeout``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.backlog and loop.time() < deadline:
            if not await self.flush(min(self.write_timeout, max(0.1, deadline - loop.time()))):
                await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))
        if self.backlog:
            log.error("records: %d rows not written at shutdown (%s)", self.backlog, self.last_error)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.flush_delay)
            self._wake.clear()
            while self.waiting:
                if await self.flush(self.write_timeout):
                    continue
                delay = self.backoff[min(self._failing, len(self.backoff)) - 1]
                await asyncio.sleep(delay)

    async def flush(self, timeout: float | None = None) -> bool:
        """Write one batch of the backlog; False if the database refused it (it stays waiting)."""
        calls, self._calls = self._calls, {}
        turns, self._turns = self._turns, {}
        batch: list[dict[str, Any]] = []
        while self._events and len(batch) < BATCH:
            batch.append(self._events.popleft())
        hooks: list[dict[str, Any]] = []
        while self._outbox and len(hooks) < BATCH:
            hooks.append(self._outbox.popleft())
        if not (calls or turns or batch or hooks):
            return True
        self._inflight = len(calls) + len(turns) + len(batch) + len(hooks)
        try:
            async with asyncio.timeout(timeout):
                await self.sink.write(list(calls.values()), list(turns.values()), batch, hooks)
        except asyncio.CancelledError:
            self._inflight = 0
            self._restore(calls, turns, batch, hooks)
            raise
        except Exception as exc:  # the database is down, slow or refusing: keep the rows
            self._inflight = 0
            self._restore(calls, turns, batch, hooks)
            self.failures += 1
            self._failing += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            if self._failing == 1 or self._failing % 20 == 0:
                log.warning("records: writing failed (%s); %d rows waiting", self.last_error, self.backlog)
            return False
        self._inflight = 0
        if self._failing:
            log.info("records: the database is back; %d rows still waiting", self.backlog)
        self._failing = 0
        self.written += len(calls) + len(turns) + len(batch) + len(hooks)
        return True

    def _restore(self, calls: dict[str, dict[str, Any]], turns: dict[tuple[str, int], dict[str, Any]],
                 batch: list[dict[str, Any]], hooks: list[dict[str, Any]]) -> None:
        # Rows that arrived during the write are newer: they win over the batch's.
        for key, row in self._calls.items():
            calls[key] = {**calls.get(key, {}), **row}
        for tkey, trow in self._turns.items():
            turns[tkey] = {**turns.get(tkey, {}), **trow}
        self._calls, self._turns = calls, turns
        self._events.extendleft(reversed(batch))
        self._outbox.extendleft(reversed(hooks))
        self._added()


class WriterCollector:
    """The writer's counters at scrape time (registered on the app's metrics registry)."""

    def __init__(self, writer: RecordWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        w = self.writer
        yield GaugeMetricFamily("voxline_records_backlog", "Call record rows waiting for the database",
                                value=w.backlog)
        yield CounterMetricFamily("voxline_records_written", "Call record rows written", value=w.written)
        yield CounterMetricFamily("voxline_records_dropped",
                                  "Call record rows lost because the backlog was full", value=w.dropped)
        yield CounterMetricFamily("voxline_records_write_failures", "Writes the database failed or timed out",
                                  value=w.failures)
        yield GaugeMetricFamily("voxline_records_database_up", "1 while the last write succeeded",
                                value=1 if w.healthy else 0)
