"""The background tasks of one agent: spawned by its parts, cancelled together.

An agent's parts (the listener, the speaker, the turn-taking around them) start
short tasks of their own: a recogniser's reader, a reply, a prefill, a timer.
They all belong to the agent's stage, so one set holds them and the stage's
``close`` cancels and awaits every one; a finished task leaves the set at once,
so the set is bounded by what is actually running. A task that fails has its
exception retrieved as it finishes: logged (a closed link only means the call's
pipeline is stopping under it, which is no error), never left for the loop's
"Task exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from voxline.media.link import LinkClosed

__all__ = ["Spawn", "TaskSet"]

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


class TaskSet:
    __slots__ = ("prefix", "_tasks")

    def __init__(self, prefix: str = "agent") -> None:
        self.prefix = prefix
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=f"{self.prefix}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, LinkClosed):
            log.debug("%s ended with its pipeline: %s", task.get_name(), exc)
        else:
            log.error("%s failed", task.get_name(), exc_info=exc)

    async def close(self) -> None:
        """Cancel every task and wait for each to end (their errors are theirs)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
