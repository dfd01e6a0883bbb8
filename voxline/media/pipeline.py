"""A pipeline: stages in path order, fused where synchronous, linked where async.

Building a pipeline from ``[t1, t2, w1, t3, w2, t4]`` gives three segments::

    push() -> t1 -> t2 -> [link] w1 -> t3 -> [link] w2 -> t4 -> sink

Consecutive transforms run inline in one call chain; each worker has a bounded
inbox and one task. ``push()`` is synchronous (a socket reader hands a packet in
and returns); ``send()`` waits for room where the first link blocks.

The last worker (playout) may also take a frame directly: if it has an
``offer(frame)`` that returns what to send now, and its task is parked on an
empty inbox, the frame goes through it and on to the sink in the caller's call,
with no hand-off to its task; ``offer`` returns None for a frame that has to
wait (early for its slot, or not a whole frame), which then queues as usual.
A relayed stream that keeps its pace crosses the pipeline in one call.

Failure is contained: a stage that raises ends *this* pipeline with a reason (it
is logged, and ``on_end`` is called), never the event loop or other pipelines.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from .budget import PathBudget, TurnLatency
from .clock import Clock, LoopClock
from .feedback import Feedback
from .frames import EndOfStream, Frame, Interrupt
from .link import Link, LinkClosed, LinkFull, LinkTimeout, Overflow
from .fuse import Chain, compile_chain
from .stage import Emit, StageContext, StageError, StageStats, Transform, Worker

__all__ = ["Pipeline", "PipelineState", "Sink"]

log = logging.getLogger(__name__)

Sink = Callable[[Frame], None]
_ns = time.perf_counter_ns

DEFAULT_STOP_TIMEOUT = 2.0


class PipelineState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


def _is_worker(stage: object) -> bool:
    return inspect.iscoroutinefunction(getattr(stage, "process", None))


class _Segment:
    """One worker (or the head, with none) and the transforms fused after it."""

    __slots__ = ("worker", "link", "stats", "chain", "transforms", "next", "task", "busy", "interrupting",
                 "offer")

    def __init__(self, worker: Worker | None, link: Link | None, stats: StageStats | None) -> None:
        self.worker = worker
        self.link = link
        self.stats = stats
        self.transforms: list[tuple[Transform, StageStats]] = []
        self.chain: Chain = compile_chain([])
        self.next: _Segment | None = None
        self.task: asyncio.Task[None] | None = None
        self.busy = False
        self.interrupting = False
        self.offer: Callable[[Frame], Sequence[Frame] | None] | None = None


class Pipeline:
    """Stages in path order; see the module docstring."""

    def __init__(
        self,
        stages: Sequence[Transform | Worker],
        sink: Sink | None = None,
        *,
        clock: Clock | None = None,
        session_id: str | None = None,
        on_end: Callable[[str], None] | None = None,
        link_capacity: dict[str, int] | None = None,
    ) -> None:
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.clock: Clock = clock or LoopClock()
        self.sink: Sink = sink or (lambda frame: None)
        self.on_end = on_end
        self.state = PipelineState.CREATED
        self.end_reason: str | None = None
        self.head_dropped = 0  # frames refused by a full first link on push()
        self.rejected = 0  # frames pushed after the pipeline stopped
        self._log = logging.LoggerAdapter(log, {"session_id": self.session_id})
        self._stages: list[Transform | Worker] = list(stages)
        self._stats: list[StageStats] = []
        self._segments: list[_Segment] = []
        self._eos = asyncio.Event()
        self._stop_task: asyncio.Task[None] | None = None

        names: set[str] = set()
        marks: list[tuple[str, float, str | None]] = []
        current = _Segment(None, None, None)
        self._segments.append(current)
        caps = link_capacity or {}
        for stage in self._stages:
            if stage.name in names:
                raise ValueError(f"duplicate stage name {stage.name!r}")
            names.add(stage.name)
            segments = getattr(stage, "marks", None)
            if segments:
                # A stage covering several turn marks (the agent: transcript, first
                # token, ...) declares a budget per mark; its latency is their sum.
                for mark, seconds in segments:
                    marks.append((f"{stage.name}.{mark}", float(seconds), mark))
            else:
                marks.append((stage.name, float(stage.latency), getattr(stage, "mark", None)))
            if _is_worker(stage):
                worker: Worker = stage  # type: ignore[assignment]
                stats = StageStats(stage.name, "worker", float(stage.latency))
                link = Link(
                    caps.get(stage.name, worker.inbox_capacity),
                    worker.overflow,
                    name=stage.name,
                    max_audio=getattr(worker, "inbox_seconds", None),
                )
                attach = getattr(stage, "attach_inbox", None)
                if attach is not None:
                    attach(link)  # e.g. playout peeks whether more audio is queued
                seg = _Segment(worker, link, stats)
                current.next = seg
                current = seg
                self._segments.append(seg)
            else:
                stats = StageStats(stage.name, "transform", float(stage.latency))
                current.transforms.append((stage, stats))  # type: ignore[arg-type]
            self._stats.append(stats)
        for seg in self._segments:
            seg.chain = compile_chain(seg.transforms)
        last = self._segments[-1]
        if last.worker is not None:
            last.offer = getattr(last.worker, "offer", None)
        self.budget = PathBudget.build(marks)
        self.latency = TurnLatency(self.budget, self.session_id)
        self.feedback = Feedback(self._stages, self._log)
        self.context = StageContext(
            clock=self.clock,
            latency=self.latency,
            log=self._log,
            interrupt=self.interrupt,
            session_id=self.session_id,
            feedback=self.feedback,
        )

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        if self.state is not PipelineState.CREATED:
            raise RuntimeError(f"pipeline {self.session_id} is {self.state.value}, not created")
        for stage in self._stages:
            bind = getattr(stage, "bind", None)
            if bind is not None:
                result = bind(self.context)
                if inspect.isawaitable(result):
                    await result
        for seg in self._segments[1:]:
            seg.task = asyncio.get_running_loop().create_task(
                self._run_worker(seg), name=f"voxline:{self.session_id}:{seg.stats.name}"  # type: ignore[union-attr]
            )
        self.state = PipelineState.RUNNING

    async def stop(self, reason: str = "stopped", timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """End now: close links, cancel workers, close stages. Idempotent."""
        if self.state is PipelineState.STOPPED:
            return
        if self.end_reason is None:
            self.end_reason = reason
        self.state = PipelineState.STOPPING
        current = asyncio.current_task()
        tasks = [s.task for s in self._segments if s.task is not None and s.task is not current]
        for seg in self._segments:
            if seg.link is not None:
                seg.link.close()
        for task in tasks:
            task.cancel()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                self._log.error("worker task %s did not stop within %.1fs", task.get_name(), timeout)
        for stage in self._stages:
            close = getattr(stage, "close", None)
            if close is not None:
                try:
                    result = close()
                    if inspect.isawaitable(result):
                        await asyncio.wait_for(result, timeout)
                except Exception:
                    self._log.exception("closing stage %s failed", stage.name)
        self.state = PipelineState.STOPPED
        self._eos.set()
        self._log.info("pipeline ended: %s", self.end_reason)
        if self.on_end is not None:
            try:
                self.on_end(self.end_reason)
            except Exception:
                self._log.exception("on_end callback failed")

    async def drain(self, timeout: float = DEFAULT_STOP_TIMEOUT, reason: str = "end") -> bool:
        """Send EndOfStream through every stage and stop once it reaches the sink.

        Returns False if it did not arrive within ``timeout`` (the pipeline is then
        stopped anyway).
        """
        if self.state is PipelineState.RUNNING:
            self.push(EndOfStream(reason, time=self.clock.now()))
        try:
            await asyncio.wait_for(self._eos.wait(), timeout)
            arrived = True
        except TimeoutError:
            arrived = False
        await self.stop(reason if arrived else f"{reason} (drain timed out)")
        return arrived

    def _fail(self, exc: BaseException) -> None:
        if self.state in (PipelineState.STOPPING, PipelineState.STOPPED):
            return
        self.end_reason = f"error: {exc}"
        self._log.error("pipeline failed: %s", exc, exc_info=exc)
        self.state = PipelineState.STOPPING
        self._stop_task = asyncio.get_running_loop().create_task(self.stop(self.end_reason))

    @property
    def running(self) -> bool:
        return self.state is PipelineState.RUNNING

    # -- data in -------------------------------------------------------------

    def _run_head(self, frame: Frame) -> list[Frame] | None:
        """The transforms before the first worker; None if the frame goes no further."""
        if self.state is not PipelineState.RUNNING:
            self.rejected += 1
            return None
        try:
            return self._segments[0].chain(frame)
        except StageError as exc:
            self._fail(exc)
            return None

    def push(self, frame: Frame) -> None:
        """Hand a frame in without waiting (live audio). Never raises for stage errors."""
        out = self._run_head(frame)
        if out is None:
            return
        nxt = self._segments[0].next
        if nxt is None:
            sink = self.sink
            for f in out:
                if type(f) is EndOfStream:
                    self._eos.set()
                sink(f)
            return
        link = nxt.link
        assert link is not None
        offer = nxt.offer
        for f in out:
            if offer is not None and link.consumer_waiting and self._take_offer(nxt, offer, f):
                continue
            try:
                link.put_nowait(f)
            except LinkFull:
                self.head_dropped += 1
            except LinkClosed:
                self.rejected += 1

    async def send(self, frame: Frame, timeout: float = 5.0) -> None:
        """Hand a frame in, waiting for room on a blocking first link."""
        out = self._run_head(frame)
        if out is not None:
            await self._forward(self._segments[0], out, timeout)

    async def _forward(self, seg: _Segment, out: list[Frame], timeout: float = 5.0) -> None:
        nxt = seg.next
        if nxt is None:
            self._deliver_sink(out)
            return
        link = nxt.link
        assert link is not None
        offer = nxt.offer
        for f in out:
            if offer is not None and link.consumer_waiting and self._take_offer(nxt, offer, f):
                continue
            await link.put(f, timeout)

    def _take_offer(self, seg: _Segment, offer: Callable[[Frame], Sequence[Frame] | None], frame: Frame) -> bool:
        """The last worker takes ``frame`` in this call if it can (see the module
        docstring); False: it did not, queue it."""
        stats = seg.stats
        assert stats is not None
        t0 = _ns()
        try:
            produced = offer(frame)
            if produced is None:
                return False
            stats.add(_ns() - t0)
            for p in produced:
                self._deliver_sink(seg.chain(p))
        except StageError as exc:
            self._fail(exc)
        except Exception as exc:
            stats.errors += 1
            self._fail(StageError(stats.name, exc))
        return True

    def _deliver_sink(self, out: list[Frame]) -> None:
        sink = self.sink
        for f in out:
            if type(f) is EndOfStream:
                self._eos.set()
            sink(f)

    # -- workers -------------------------------------------------------------

    def _emitter(self, seg: _Segment) -> Emit:
        chain = seg.chain
        forward = self._forward

        async def emit(frame: Frame) -> None:
            await forward(seg, chain(frame))

        return emit

    async def _run_worker(self, seg: _Segment) -> None:
        worker = seg.worker
        link = seg.link
        stats = seg.stats
        assert worker is not None and link is not None and stats is not None
        emit = self._emitter(seg)
        process = worker.process
        on_control = getattr(worker, "on_control", None)
        attach_emit = getattr(worker, "attach_emit", None)
        if attach_emit is not None:
            attach_emit(emit)  # a worker that speaks unprompted (a greeting) needs it
        task = asyncio.current_task()
        assert task is not None
        try:
            while True:
                frame = await link.get()
                t = type(frame)
                if t is Interrupt or t is EndOfStream:
                    if on_control is not None:
                        result = on_control(frame)
                        if inspect.isawaitable(result):
                            await result
                    await emit(frame)
                    if t is EndOfStream:
                        return
                    continue
                seg.busy = True
                t0 = _ns()
                try:
                    await process(frame, emit)
                except asyncio.CancelledError:
                    if not seg.interrupting:
                        raise
                    seg.interrupting = False
                    task.uncancel()
                finally:
                    seg.busy = False
                stats.add(_ns() - t0)
                if seg.interrupting:
                    # The worker swallowed the cancellation itself; clear it here so a
                    # later real cancellation (shutdown) is not mistaken for this one.
                    seg.interrupting = False
                    if task.cancelling():
                        task.uncancel()
        except asyncio.CancelledError:
            raise
        except (LinkClosed, LinkTimeout) as exc:
            if self.state is PipelineState.RUNNING:
                self._fail(StageError(stats.name, exc))
        except StageError as exc:
            self._fail(exc)
        except Exception as exc:
            stats.errors += 1
            self._fail(StageError(stats.name, exc))

    # -- interruption --------------------------------------------------------

    def interrupt(self, reason: str = "barge-in", after: str | None = None) -> int:
        """Stop what is in flight downstream of ``after`` (a stage's name; default:
        everything) and send an Interrupt frame down the path. Returns the number of
        data frames flushed."""
        if self.state is not PipelineState.RUNNING:
            return 0
        segments = self._segments
        start = 1
        if after is not None:
            # A worker, or a transform: nothing is in flight inside a segment's
            # transforms, so downstream of one is downstream of its segment.
            for i, seg in enumerate(segments):
                if (seg.stats is not None and seg.stats.name == after) or \
                        any(t.name == after for t, _ in seg.transforms):
                    start = i + 1
                    break
            else:
                raise ValueError(f"no stage named {after!r}")
        flushed = 0
        for seg in segments[start:]:
            assert seg.link is not None
            flushed += seg.link.flush()
            if seg.busy and seg.task is not None and not seg.interrupting:
                seg.interrupting = True
                seg.task.cancel()
            hooks: list[Any] = [seg.worker] + [t for t, _ in seg.transforms]
            for stage in hooks:
                hook = getattr(stage, "interrupt", None)
                if hook is not None:
                    hook()
        frame = Interrupt(reason, time=self.clock.now())
        if start < len(segments):
            link = segments[start].link
            assert link is not None
            link.put_nowait(frame)
        else:
            self.sink(frame)
        self._log.debug("interrupt (%s): flushed %d frames", reason, flushed)
        return flushed

    # -- reporting -----------------------------------------------------------

    def stage(self, name: str) -> Transform | Worker | None:
        """The stage called ``name``, if the pipeline has one."""
        for stage in self._stages:
            if stage.name == name:
                return stage
        return None

    def links(self) -> list[Link]:
        return [s.link for s in self._segments if s.link is not None]

    def stats(self) -> dict[str, object]:
        return {
            "session_id": self.session_id,
            "state": self.state.value,
            "end_reason": self.end_reason,
            "stages": [s.as_dict() for s in self._stats],
            "links": [link.stats().as_dict() for link in self.links()],
            "head_dropped": self.head_dropped,
            "rejected": self.rejected,
            "latency": self.latency.as_dict(),
        }
