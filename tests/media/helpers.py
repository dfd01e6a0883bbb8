"""Small stages for tests: a recording sink, a configurable worker."""

from __future__ import annotations

import asyncio

import numpy as np

from voxline.media.clock import Clock
from voxline.media.frames import Audio, Frame
from voxline.media.link import Overflow
from voxline.media.stage import Emit


def audio(i: int, rate: int = 16000, ms: int = 20, turn: int = 0) -> Audio:
    n = rate * ms // 1000
    return Audio(np.full(n, i % 30000, dtype=np.int16), rate, i * n, 0.0, turn)


class Echo:
    """A worker that forwards every frame, optionally waiting on the clock first."""

    def __init__(
        self,
        name: str,
        capacity: int = 8,
        overflow: Overflow = Overflow.BLOCK,
        clock: Clock | None = None,
        delay: float = 0.0,
        latency: float = 0.0,
    ) -> None:
        self.name = name
        self.latency = latency
        self.inbox_capacity = capacity
        self.overflow = overflow
        self.clock = clock
        self.delay = delay
        self.seen: list[Frame] = []
        self.controls: list[Frame] = []
        self.interrupted = 0
        self.closed = False
        self.gate: asyncio.Event | None = None

    async def process(self, frame: Frame, emit: Emit) -> None:
        self.seen.append(frame)
        if self.gate is not None:
            await self.gate.wait()
        if self.clock is not None and self.delay:
            await self.clock.sleep_until(self.clock.now() + self.delay)
        await emit(frame)

    def on_control(self, frame: Frame) -> None:
        self.controls.append(frame)

    def interrupt(self) -> None:
        self.interrupted += 1

    def close(self) -> None:
        self.closed = True


class Explode:
    """A transform or worker that raises on the n-th frame."""

    def __init__(self, name: str, at: int) -> None:
        self.name = name
        self.latency = 0.0
        self.at = at
        self.n = 0

    def process(self, frame: Frame) -> tuple[Frame, ...]:
        self.n += 1
        if self.n == self.at:
            raise RuntimeError("boom")
        return (frame,)
