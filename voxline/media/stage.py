"""Stage contracts: synchronous transforms and async workers.

A **transform** is called once per frame and returns the frames it produces
(usually the same one, changed or not). Consecutive transforms are fused by the
pipeline into one inline call chain: no queue, no task switch between them.

A **worker** owns an inbox link and a task. ``process(frame, emit)`` may await
(a provider's socket, an executor running a model) and calls ``await emit(f)``
for each frame it produces; ``emit`` runs the transforms that follow inline and
then waits on the next link's policy. Control frames are given to
``on_control`` (if the worker has one) and forwarded by the pipeline.

Both kinds declare ``name`` and ``latency`` (seconds the stage adds to the path,
used for the pipeline's budget) and may declare ``mark``: the per-turn latency
mark their output reaches, or ``marks``: ``(mark, seconds)`` pairs for a stage
that covers several (the agent). Optional hooks, looked up once when the pipeline
is built: ``listens`` (feedback event types) with ``on_feedback(event)``,
``bind(ctx)`` before the first frame, ``attach_inbox(link)`` and
``attach_emit(emit)`` for workers that need their inbox or to emit unprompted,
``interrupt()`` when an Interrupt flushes the stage, ``close()`` (sync or async)
at shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .frames import Frame
from .link import Overflow

if TYPE_CHECKING:
    from .budget import TurnLatency
    from .clock import Clock
    from .feedback import Feedback

__all__ = [
    "Transform",
    "Worker",
    "Emit",
    "StageStats",
    "StageContext",
    "StageError",
    "PassThrough",
]

Emit = Callable[[Frame], Awaitable[None]]


@runtime_checkable
class Transform(Protocol):
    name: str
    latency: float

    def process(self, frame: Frame) -> Sequence[Frame]: ...


@runtime_checkable
class Worker(Protocol):
    name: str
    latency: float
    inbox_capacity: int
    overflow: Overflow

    async def process(self, frame: Frame, emit: Emit) -> None: ...


class StageError(Exception):
    """A stage raised; carries the stage's name. Ends that pipeline only."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage {stage!r} failed: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause


# Transforms time one frame in SAMPLE_EVERY (the first, then every 16th): two
# clock reads and the bookkeeping cost about as much as a pass-through stage, and
# a per-frame stage's cost is steady enough that 1 in 16 estimates it well.
SAMPLE_EVERY = 16
SAMPLE_MASK = SAMPLE_EVERY - 1


class StageStats:
    """Processing time of one stage: frames seen, and the total and max of the
    frames timed (every frame for workers, one in ``SAMPLE_EVERY`` for transforms).
    """

    __slots__ = ("name", "kind", "latency", "count", "timed", "total_ns", "max_ns", "errors")

    def __init__(self, name: str, kind: str, latency: float) -> None:
        self.name = name
        self.kind = kind
        self.latency = latency
        self.count = 0
        self.timed = 0
        self.total_ns = 0
        self.max_ns = 0
        self.errors = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.record(ns)

    def record(self, ns: int) -> None:
        self.timed += 1
        self.total_ns += ns
        if ns > self.max_ns:
            self.max_ns = ns

    def as_dict(self) -> dict[str, object]:
        mean = self.total_ns / self.timed / 1000 if self.timed else 0.0
        return {
            "name": self.name,
            "kind": self.kind,
            "latency_budget_ms": round(self.latency * 1000, 3),
            "frames": self.count,
            "mean_us": round(mean, 3),
            "max_us": round(self.max_ns / 1000, 3),
            "errors": self.errors,
        }


@dataclass(slots=True)
class StageContext:
    """What a stage may reach of its pipeline: time, turn marks, interruption,
    feedback against the media's direction (see feedback.py), a logger that
    carries the session id."""

    clock: Clock
    latency: TurnLatency
    log: logging.LoggerAdapter[logging.Logger]
    interrupt: Callable[..., int]  # (reason, after=worker name): see Pipeline.interrupt
    session_id: str
    feedback: Feedback

    def mark(self, turn: int, name: str, at: float | None = None) -> None:
        self.latency.mark(turn, name, self.clock.now() if at is None else at)


class PassThrough:
    """A transform that returns every frame unchanged (tests and benchmarks)."""

    __slots__ = ("name", "latency")

    def __init__(self, name: str = "pass", latency: float = 0.0) -> None:
        self.name = name
        self.latency = latency

    def process(self, frame: Frame) -> Sequence[Frame]:
        return (frame,)
