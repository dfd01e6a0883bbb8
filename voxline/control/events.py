"""A session's event stream: bounded fan-out to any number of subscribers.

Each subscriber has its own bounded queue; a slow one (a stalled WebSocket)
loses its oldest events, counted, and never holds up the call or the others.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["EventBus", "Subscription"]

DEFAULT_DEPTH = 256
HISTORY = 64  # recent events replayed to a new subscriber, so a page opened late catches up


class Subscription:
    def __init__(self, bus: "EventBus", depth: int) -> None:
        self._bus = bus
        self._queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=depth)
        self._waiter: asyncio.Future[None] | None = None
        self.dropped = 0
        self.closed = False

    def _put(self, event: dict[str, Any]) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event; None once the stream has ended (or on timeout)."""
        while not self._queue:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                return None
            finally:
                self._waiter = None
        return self._queue.popleft()

    def close(self) -> None:
        self.closed = True
        self._wake()
        self._bus._subs.discard(self)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[dict[str, Any]]:
        while (event := await self.get()) is not None:
            yield event


class EventBus:
    def __init__(self, session_id: str, max_subscribers: int = 16) -> None:
        self.session_id = session_id
        self.max_subscribers = max_subscribers
        self._subs: set[Subscription] = set()
        self._history: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY)
        self._seq = 0
        self.published = 0

    def publish(self, kind: str, turn: int = 0, /, **data: Any) -> None:
        self._seq += 1
        event = {"seq": self._seq, "time": time.time(), "session_id": self.session_id,
                 "kind": kind, "turn": turn, "data": data}
        self._history.append(event)
        self.published += 1
        for sub in list(self._subs):
            sub._put(event)

    def subscribe(self, depth: int = DEFAULT_DEPTH, replay: bool = True) -> Subscription:
        if len(self._subs) >= self.max_subscribers:
            raise OverflowError(f"session {self.session_id} has {self.max_subscribers} subscribers already")
        sub = Subscription(self, depth)
        if replay:
            for event in self._history:
                sub._put(event)
        self._subs.add(sub)
        return sub

    def close(self) -> None:
        for sub in list(self._subs):
            sub.close()

    @property
    def subscribers(self) -> int:
        return len(self._subs)
