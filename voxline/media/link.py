"""Links: the bounded queues between worker stages.

A link has one consumer (the worker that owns it) and any number of producers.
Every link declares a capacity and what happens when it is full:

- ``block``: the producer waits (backpressure; e.g. TTS into egress). A waiting
  producer always has a deadline; ``put`` raises ``LinkTimeout`` past it.
- ``drop_oldest``: the oldest queued data frame is dropped to make room (live
  audio that cannot wait). Dropped frames are counted.

Control frames are never dropped and never count against the capacity, but they
differ in order. ``Interrupt`` goes in a separate lane that the consumer reads
first, so an interruption never waits behind queued audio; that lane is bounded
too (one pending frame), and since a pending interruption makes a second one
redundant, duplicates coalesce. ``EndOfStream`` is delivered *after* the data
queued before it: if it overtook that data, draining a pipeline would lose the
last audio. A data frame offered after EndOfStream is refused (``LinkClosed``).

This is deliberately not ``asyncio.Queue``: a deque and one waiter future per side
cost a fraction of a queue's locking on the per-frame path, and the policies,
control lane and counters are what a voice pipeline actually needs.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from dataclasses import dataclass

from .frames import EndOfStream, Frame, Interrupt

__all__ = ["Overflow", "Link", "LinkFull", "LinkTimeout", "LinkClosed", "LinkStats"]

DEFAULT_PUT_TIMEOUT = 5.0


class Overflow(enum.Enum):
    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"


class LinkFull(Exception):
    """A ``block`` link is full and the producer asked not to wait."""


class LinkTimeout(TimeoutError):
    """A producer waited on a full ``block`` link past its deadline."""


class LinkClosed(Exception):
    """The link's consumer has gone; nothing more can be put."""


@dataclass(frozen=True, slots=True)
class LinkStats:
    name: str
    capacity: int
    policy: str
    depth: int
    high_water: int
    put: int
    got: int
    dropped: int
    flushed: int

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "capacity": self.capacity,
            "policy": self.policy,
            "depth": self.depth,
            "high_water": self.high_water,
            "put": self.put,
            "got": self.got,
            "dropped": self.dropped,
            "flushed": self.flushed,
        }


class Link:
    """A bounded single-consumer queue of frames with a priority control lane."""

    __slots__ = (
        "name",
        "capacity",
        "policy",
        "_data",
        "_control",
        "_getter",
        "_putters",
        "_closed",
        "_eos",
        "put_count",
        "got_count",
        "dropped",
        "flushed",
        "high_water",
    )

    def __init__(self, capacity: int, policy: Overflow = Overflow.BLOCK, name: str = "link") -> None:
        if capacity < 1:
            raise ValueError(f"link capacity must be at least 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.policy = policy
        self._data: collections.deque[Frame] = collections.deque()
        self._control: collections.deque[Frame] = collections.deque()
        self._getter: asyncio.Future[None] | None = None
        self._putters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._eos: Frame | None = None
        self.put_count = 0
        self.got_count = 0
        self.dropped = 0
        self.flushed = 0
        self.high_water = 0

    def __len__(self) -> int:
        return len(self._data) + len(self._control) + (self._eos is not None)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- producer side -----------------------------------------------------

    def put_nowait(self, frame: Frame) -> None:
        """Queue a frame without waiting.

        Control frames always go in. Data on a full ``drop_oldest`` link displaces
        the oldest data frame; on a full ``block`` link raises ``LinkFull``.
        """
        if self._closed:
            raise LinkClosed(f"link {self.name} is closed")
        t = type(frame)
        if t is Interrupt:
            self._put_control(frame)
            return
        if self._eos is not None:
            raise LinkClosed(f"link {self.name} has ended (EndOfStream queued)")
        if t is EndOfStream:
            self._eos = frame
            self.put_count += 1
            self._wake_getter()
            return
        data = self._data
        if len(data) >= self.capacity:
            if self.policy is Overflow.DROP_OLDEST:
                data.popleft()
                self.dropped += 1
            else:
                raise LinkFull(f"link {self.name} is full ({self.capacity} frames)")
        data.append(frame)
        self.put_count += 1
        if len(data) > self.high_water:
            self.high_water = len(data)
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    def _wake_getter(self) -> None:
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    async def put(self, frame: Frame, timeout: float = DEFAULT_PUT_TIMEOUT) -> None:
        """Queue a frame, waiting for room on a full ``block`` link up to ``timeout``."""
        if self.policy is Overflow.BLOCK and len(self._data) >= self.capacity:
            t = type(frame)
            if t is not Interrupt and t is not EndOfStream:
                await self._wait_for_room(timeout)
        self.put_nowait(frame)

    async def _wait_for_room(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self._data) >= self.capacity:
            if self._closed:
                raise LinkClosed(f"link {self.name} is closed")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LinkTimeout(f"link {self.name} stayed full for {timeout:.3f}s")
            fut: asyncio.Future[None] = loop.create_future()
            self._putters.append(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                pass
            finally:
                if not fut.done():
                    fut.cancel()
                try:
                    self._putters.remove(fut)
                except ValueError:
                    pass

    def _put_control(self, frame: Frame) -> None:
        ctl = self._control
        if ctl:
            return  # an interruption is already pending: a second one adds nothing
        ctl.append(frame)
        self.put_count += 1
        self._wake_getter()

    # -- consumer side -----------------------------------------------------

    def get_nowait(self) -> Frame | None:
        if self._control:
            self.got_count += 1
            return self._control.popleft()
        if self._data:
            frame = self._data.popleft()
            self.got_count += 1
            if self._putters:
                self._wake_putter()
            return frame
        if self._eos is not None:
            frame, self._eos = self._eos, None
            self.got_count += 1
            return frame
        return None

    async def get(self) -> Frame:
        while True:
            frame = self.get_nowait()
            if frame is not None:
                return frame
            if self._closed:
                raise LinkClosed(f"link {self.name} is closed")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getter = fut
            try:
                await fut
            finally:
                if self._getter is fut:
                    self._getter = None

    def _wake_putter(self) -> None:
        while self._putters:
            fut = self._putters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def flush(self) -> int:
        """Drop all queued data frames (control frames stay); return how many."""
        n = len(self._data)
        self._data.clear()
        self.flushed += n
        while self._putters:
            self._wake_putter()
        return n

    def close(self) -> None:
        """Refuse further frames and wake everyone waiting on this link."""
        self._closed = True
        self._wake_getter()
        while self._putters:
            self._wake_putter()

    def stats(self) -> LinkStats:
        return LinkStats(
            self.name,
            self.capacity,
            self.policy.value,
            len(self._data),
            self.high_water,
            self.put_count,
            self.got_count,
            self.dropped,
            self.flushed,
        )
