import asyncio

import pytest

from voxline.media.clock import FakeClock
from voxline.media.frames import Audio, EndOfStream, Frame, Interrupt, TextChunk
from voxline.media.link import Overflow
from voxline.media.pipeline import Pipeline, PipelineState
from voxline.media.stage import PassThrough

from .helpers import Echo, Explode, audio


class Double:
    name = "double"
    latency = 0.0

    def process(self, frame: Frame) -> tuple[Frame, ...]:
        return (frame, frame) if type(frame) is Audio else (frame,)


class Swallow:
    name = "swallow"
    latency = 0.0

    def process(self, frame: Frame) -> tuple[Frame, ...]:
        return () if type(frame) is Audio else (frame,)


async def test_fused_transforms_deliver_inline_without_a_task_switch() -> None:
    out: list[Frame] = []
    p = Pipeline([PassThrough("a"), Double(), PassThrough("b")], out.append)
    await p.start()
    p.push(audio(1))
    assert len(out) == 2  # synchronously, before any await
    stats = {s["name"]: s for s in p.stats()["stages"]}  # type: ignore[union-attr,index]
    assert stats["a"]["frames"] == 1 and stats["b"]["frames"] == 2
    await p.stop()


async def test_transform_may_swallow_frames() -> None:
    out: list[Frame] = []
    p = Pipeline([Swallow(), PassThrough("b")], out.append)
    await p.start()
    p.push(audio(1))
    p.push(TextChunk("hi"))
    assert [type(f) for f in out] == [TextChunk]
    await p.stop()


async def test_duplicate_stage_names_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate stage name 'a'"):
        Pipeline([PassThrough("a"), PassThrough("a")])


async def test_frames_cross_workers_in_order_and_drain_delivers_all(no_leaked_tasks: None) -> None:
    out: list[Frame] = []
    w1, w2 = Echo("w1"), Echo("w2")
    p = Pipeline([PassThrough("t0"), w1, PassThrough("t1"), w2], out.append)
    await p.start()
    for i in range(20):
        await p.send(audio(i))
    assert await p.drain(1.0)
    assert [f.pts // 320 for f in out if type(f) is Audio] == list(range(20))
    assert type(out[-1]) is EndOfStream
    assert p.state is PipelineState.STOPPED and p.end_reason == "end"
    assert w1.closed and w2.closed


async def test_drop_oldest_link_drops_under_a_slow_worker() -> None:
    clock = FakeClock()
    out: list[Frame] = []
    slow = Echo("slow", capacity=4, overflow=Overflow.DROP_OLDEST, clock=clock, delay=0.1)
    p = Pipeline([slow], out.append, clock=clock)
    await p.start()
    for i in range(10):
        p.push(audio(i))
    await clock.settle()
    # All ten pushes land before the worker first runs: a 4-frame link keeps 6-9.
    link = p.links()[0]
    assert link.dropped == 6
    for _ in range(6):
        await clock.advance(0.1)
    assert [f.pts // 320 for f in out] == [6, 7, 8, 9]
    await p.stop()


async def test_push_into_full_blocking_link_counts_head_drops() -> None:
    clock = FakeClock()
    slow = Echo("slow", capacity=2, overflow=Overflow.BLOCK, clock=clock, delay=1.0)
    p = Pipeline([slow], clock=clock)
    await p.start()
    for i in range(6):
        p.push(audio(i))
    await clock.settle()
    assert p.head_dropped == 4  # 2 queued, 4 refused (pushes land before the worker runs)
    for i in range(6, 9):
        p.push(audio(i))
    await clock.settle()
    assert p.head_dropped == 6  # the worker holds frame 0, frame 1 and frame 6 queued
    await p.stop()


async def test_send_waits_on_backpressure() -> None:
    clock = FakeClock()
    out: list[Frame] = []
    slow = Echo("slow", capacity=1, overflow=Overflow.BLOCK, clock=clock, delay=1.0)
    p = Pipeline([slow], out.append, clock=clock)
    await p.start()
    await p.send(audio(0))
    await clock.settle()
    await p.send(audio(1))  # fills the link
    blocked = asyncio.create_task(p.send(audio(2)))
    await clock.settle()
    assert not blocked.done()
    await clock.advance(1.0)
    assert blocked.done() and len(out) == 1
    await p.stop()


async def test_interrupt_flushes_downstream_cancels_in_flight_and_orders_control(
    no_leaked_tasks: None,
) -> None:
    out: list[Frame] = []
    up, down = Echo("up"), Echo("down", capacity=16)
    p = Pipeline([up, down], out.append)
    await p.start()
    gate = asyncio.Event()
    down.gate = gate  # "down" is busy with its first frame: in-flight work
    for i in range(6):
        await p.send(audio(i))
    await asyncio.sleep(0.01)
    assert len(down.seen) == 1 and not out
    flushed = p.interrupt("barge-in", after="up")
    assert flushed == 5
    assert down.interrupted == 1 and up.interrupted == 0
    await asyncio.sleep(0.01)
    assert not out[:-1] and type(out[-1]) is Interrupt  # nothing of the old reply got out
    assert down.controls and type(down.controls[0]) is Interrupt
    down.gate = None
    await p.send(audio(9))
    await asyncio.sleep(0.01)
    assert [f.pts // 320 for f in out if type(f) is Audio] == [9]  # the worker lives on
    await p.stop()


async def test_interrupt_unknown_worker_is_an_error() -> None:
    p = Pipeline([Echo("w")])
    await p.start()
    with pytest.raises(ValueError, match="no stage named 'x'"):
        p.interrupt(after="x")
    await p.stop()


async def test_failing_transform_ends_only_its_pipeline(no_leaked_tasks: None) -> None:
    ended: list[str] = []
    good_out: list[Frame] = []
    bad = Pipeline([Explode("bad", at=3), Echo("w")], on_end=ended.append)
    good = Pipeline([PassThrough("ok"), Echo("w")], good_out.append)
    await bad.start()
    await good.start()
    for i in range(5):
        bad.push(audio(i))  # never raises into the caller
        good.push(audio(i))
    await asyncio.sleep(0.01)
    assert bad.state is PipelineState.STOPPED
    assert ended and "stage 'bad' failed: RuntimeError: boom" in ended[0]
    assert bad.rejected == 2
    assert good.running and len(good_out) == 5
    await good.stop()


async def test_failing_worker_ends_its_pipeline_with_reason(no_leaked_tasks: None) -> None:
    class Broken(Echo):
        async def process(self, frame: Frame, emit) -> None:  # type: ignore[no-untyped-def]
            raise ValueError("bad frame")

    ended: list[str] = []
    p = Pipeline([Broken("w")], on_end=ended.append)
    await p.start()
    p.push(audio(0))
    await asyncio.sleep(0.01)
    assert p.state is PipelineState.STOPPED
    assert ended == ["error: stage 'w' failed: ValueError: bad frame"]


async def test_stop_leaves_no_tasks_and_is_idempotent(no_leaked_tasks: None) -> None:
    ws = [Echo(f"w{i}") for i in range(5)]
    p = Pipeline(ws)
    await p.start()
    for i in range(3):
        p.push(audio(i))
    await p.stop("hangup")
    await p.stop("again")
    assert p.end_reason == "hangup"
    assert all(w.closed for w in ws)
    p.push(audio(9))
    assert p.rejected == 1


async def test_budget_sums_declared_latencies_and_segments() -> None:
    class Stt(Echo):
        mark = "transcript"

    class Vad(PassThrough):
        __slots__ = ()
        mark = "vad_end"

    vad = Vad("vad", latency=0.2)
    stt = Stt("stt", latency=0.3)
    p = Pipeline([PassThrough("decode", 0.001), vad, stt, PassThrough("x", 0.05)])
    assert p.budget.total == pytest.approx(0.551)
    assert p.budget.segment("vad_end") == pytest.approx(0.201)
    assert p.budget.segment("transcript") == pytest.approx(0.3)
    assert dict(p.budget.stages)["x"] == 0.05
