"""The writer: rows wait in a bounded backlog while the database fails, the
latest state of a call replaces the one waiting, and everything arrives once the
database is back."""

from __future__ import annotations

import asyncio
from typing import Any

from voxline.records.writer import RecordWriter


class FlakySink:
    def __init__(self) -> None:
        self.up = False
        self.calls: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.attempts = 0

    async def write(self, calls: list[dict[str, Any]], turns: list[dict[str, Any]],
                    events: list[dict[str, Any]], outbox: list[dict[str, Any]]) -> None:
        self.attempts += 1
        if not self.up:
            raise ConnectionRefusedError("database down")
        for c in calls:
            self.calls[c["id"]] = {**self.calls.get(c["id"], {}), **c}
        self.events += events


async def test_rows_wait_out_a_failing_database_and_arrive_in_order() -> None:
    sink = FlakySink()
    w = RecordWriter(sink, capacity=100, flush_delay=0.0, backoff=(0.01,))
    w.start()
    try:
        w.call({"id": "a", "state": "active"})
        for i in range(10):
            w.event({"call_id": "a", "seq": i})
        w.call({"id": "a", "state": "ended"})  # coalesced with the waiting row
        await asyncio.sleep(0.1)
        assert sink.attempts >= 2 and w.backlog == 11 and w.failures >= 2 and not w.healthy
        sink.up = True
        for _ in range(100):
            if w.backlog == 0:
                break
            await asyncio.sleep(0.01)
        assert w.backlog == 0 and w.healthy
        assert sink.calls == {"a": {"id": "a", "state": "ended"}}
        assert [e["seq"] for e in sink.events] == list(range(10))
        assert w.dropped == 0 and w.written == 11
    finally:
        await w.close(0.5)


async def test_the_backlog_is_bounded_and_drops_the_oldest_events_first() -> None:
    sink = FlakySink()
    w = RecordWriter(sink, capacity=5, flush_delay=0.0, backoff=(10.0,))
    w.call({"id": "a", "state": "active"})
    for i in range(10):
        w.event({"call_id": "a", "seq": i})
    assert w.backlog == 5 and w.dropped == 6
    sink.up = True
    assert await w.flush()
    assert list(sink.calls) == ["a"] and [e["seq"] for e in sink.events] == [6, 7, 8, 9]


async def test_rows_that_arrive_during_a_failed_write_win_over_the_batch() -> None:
    gate = asyncio.Event()

    class Slow(FlakySink):
        async def write(self, calls, turns, events, outbox):  # type: ignore[no-untyped-def]
            await gate.wait()
            raise TimeoutError("slow")

    w = RecordWriter(Slow(), capacity=100)
    w.call({"id": "a", "state": "active", "dtmf": ""})
    writing = asyncio.ensure_future(w.flush())
    await asyncio.sleep(0)
    w.call({"id": "a", "state": "ended"})
    gate.set()
    assert await writing is False
    assert w._calls == {"a": {"id": "a", "state": "ended", "dtmf": ""}}


async def test_a_slow_database_times_out_and_the_rows_stay() -> None:
    class Hang(FlakySink):
        async def write(self, calls, turns, events, outbox):  # type: ignore[no-untyped-def]
            await asyncio.sleep(10)

    w = RecordWriter(Hang(), capacity=100)
    w.event({"call_id": "a", "seq": 1})
    assert await w.flush(timeout=0.05) is False
    assert w.backlog == 1 and w.failures == 1
