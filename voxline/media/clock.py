"""Injected time.

The design asks for ``clock: Callable[[], float]``. A bare callable can read time
but cannot wait for it, and the playout clock, jitter buffers and deadlines all
need to wait until an absolute time. So a clock here is an object with ``now()``
and ``sleep_until(t)``; ``clock.now`` is the bare callable where one is wanted.

``LoopClock`` is the event loop's monotonic time. ``FakeClock`` is virtual time
for tests: nothing moves until the test calls ``advance``, and sleepers wake in
deadline order, each getting a chance to run before time moves past the next one.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Protocol

__all__ = ["Clock", "LoopClock", "FakeClock"]


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class LoopClock:
    """The running event loop's clock (monotonic seconds)."""

    __slots__ = ()

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        delay = deadline - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            # Still yield, so a loop that is behind schedule cannot starve others.
            await asyncio.sleep(0)


class FakeClock:
    """Virtual time. ``await clock.advance(dt)`` runs every sleeper due by then."""

    def __init__(self, start: float = 0.0, *, auto_advance: bool = False) -> None:
        # auto_advance: a sleeper jumps time straight to its deadline. For a single
        # timed task (an hour of playout in a test) where stepping is too slow.
        self.auto_advance = auto_advance
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        if self.auto_advance:
            self._now = deadline
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), fut))
        await fut

    @property
    def pending(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def settle(self, rounds: int = 20) -> None:
        """Let ready tasks run until the loop has nothing left to do at this instant."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    def stall(self, dt: float) -> None:
        """Time passes and nothing runs (a blocked loop): sleepers due meanwhile
        wake, late, at the next ``advance``."""
        self._now += dt

    async def advance(self, dt: float) -> None:
        """Move time forward by ``dt``, waking sleepers in deadline order."""
        target = self._now + dt
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not fut.done():
                fut.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()
