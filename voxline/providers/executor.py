"""A bounded, process-wide executor for model inference, and its async plumbing.

Whisper (CTranslate2), Piper (onnxruntime), llama.cpp and espeak-ng run their
work in native code that releases the GIL, so a few threads let the event loop
keep moving frames while a model computes. Measured on the 2-core machine with
the engine on one thread (so a core is free and only the GIL can stall the
loop thread): a pure-Python counter on the loop thread kept 0.87 of its solo
rate during a whisper decode, 0.98 during Piper, ~1.0 during espeak-ng and
0.68 during SmolLM2 generation (llama-cpp-python runs Python per token: at
100+ tokens/s that glue is a visible share). A loop sleeping 1 ms at a time was
late by p99 0.4 ms (whisper) / 0.6 ms (llama.cpp), worst 4-5 ms: the GIL is
held only in the Python between native calls (feature extraction,
detokenisation, numpy conversion).

Three pieces:

``AsyncSlots``
    A counting semaphore that any event loop may wait on and any thread may
    release. ``asyncio.Semaphore`` binds itself to one loop; the executor and the
    models are shared by the whole process (and by tests that each run their own
    loop), and a slot is given back by the worker thread when the native call
    really ends, not when the awaiting coroutine gives up.

``InferenceExecutor``
    A ``ThreadPoolExecutor`` with a fixed number of threads and a bound on jobs
    admitted (running + queued). A submit past the bound waits for a slot up to
    its deadline, then raises ``ProviderTimeout`` (phase ``"executor slot"``), so
    a burst of sessions cannot pile unbounded work behind two cores.

``ThreadChannel``
    A bounded hand-over of items from a worker thread to the event loop
    (``call_soon_threadsafe``), with backpressure on the thread and a cancel flag
    the thread checks between items: how a streaming engine (LLM tokens, TTS
    chunks) feeds an async iterator and stops within one item of cancellation.

Memory: the engines allocate and free hundreds of MB per long job (Piper: about
150 MB per 4096 characters voiced) in the worker threads' malloc arenas, which
glibc keeps rather than returns; after a burst of synthesis the process stayed
that much larger for good. When the executor falls idle, its last worker calls
glibc's ``malloc_trim`` (``trim.py``: at most every ``TRIM_INTERVAL``; a timer catches the
one skipped), so memory goes back to the system once the work is done.

Process-wide state lives here and only here: ``shared_executor()`` (one pool
per process is the point, created lazily under a lock) and ``load_shared(key,
loader)``, the model cache — each engine's model loaded once per process and
shared by every session, a dict guarded by a lock, with a lock per entry so
concurrent callers wait for the one load. Call ``load_shared`` from a worker
thread: loading blocks.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .base import Deadlines, ProviderError, ProviderTimeout
from .trim import TRIMMER

__all__ = [
    "AsyncSlots",
    "ExecutorConfig",
    "InferenceExecutor",
    "ThreadChannel",
    "ChannelClosed",
    "shared_executor",
    "load_shared",
    "load_model",
    "receive",
    "loaded_models",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class AsyncSlots:
    """A semaphore awaited from any event loop and released from any thread.

    Waiters are served first in, first out; a released slot is handed straight
    to the oldest waiter (on that waiter's loop), so a late arrival cannot
    overtake. A waiter that is cancelled or times out gives its slot back.
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"slot count must be at least 1, got {count}")
        self.count = count
        self._free = count
        self._lock = threading.Lock()
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = (
            collections.deque()
        )

    @property
    def free(self) -> int:
        return self._free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, timeout: float | None = None) -> bool:
        """Take a slot; False if none came within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return True
            waiter: asyncio.Future[None] = loop.create_future()
            entry = (loop, waiter)
            self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await waiter
            return True
        except TimeoutError:
            self._abandon(entry)
            return False
        except asyncio.CancelledError:
            self._abandon(entry)
            raise

    def _abandon(self, entry: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]) -> None:
        with self._lock:
            try:
                self._waiters.remove(entry)
                return  # never granted
            except ValueError:
                pass
        # Already popped by release(): either _grant has run (result set: the
        # slot is ours, give it back) or it will run, see the cancelled future
        # and pass the slot on itself.
        waiter = entry[1]
        if waiter.done() and not waiter.cancelled():
            self.release()

    def release(self) -> None:
        """Give a slot back. Safe from any thread."""
        with self._lock:
            while self._waiters:
                loop, waiter = self._waiters.popleft()
                try:
                    loop.call_soon_threadsafe(self._grant, waiter)
                    return
                except RuntimeError:  # that waiter's loop is closed: skip it
                    continue
            if self._free >= self.count:
                raise RuntimeError("AsyncSlots released more often than acquired")
            self._free += 1

    def _grant(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():  # cancelled while the grant was in flight
            self.release()
        else:
            waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class ExecutorConfig:
    # Two cores: two jobs at once. Each engine also runs its own native threads
    # (cpu_threads / n_threads), so more pool threads only oversubscribe.
    threads: int = 2
    # Jobs admitted beyond those running; further submits wait for a slot.
    max_queued: int = 8
    # How long a submit may wait for a slot when the caller gives no deadline.
    admit_timeout: float = 5.0


class InferenceExecutor:
    """Fixed threads, bounded admission; never blocks the event loop."""

    def __init__(self, config: ExecutorConfig | None = None) -> None:
        self.config = config or ExecutorConfig()
        if self.config.threads < 1 or self.config.max_queued < 0:
            raise ValueError(f"invalid executor config: {self.config}")
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.threads, thread_name_prefix="voxline-infer"
        )
        self._slots = AsyncSlots(self.config.threads + self.config.max_queued)
        self.rejected = 0  # submits that timed out waiting for a slot
        self._urgent = 0  # urgent jobs running
        self._urgent_done = threading.Condition()
        self.yielded_seconds = 0.0  # time long jobs spent waiting for urgent ones
        self.trimmer = TRIMMER

    @property
    def pending(self) -> int:
        """Jobs admitted and not finished (running + queued)."""
        return self._slots.count - self._slots.free

    async def submit(
        self,
        fn: Callable[..., T],
        *args: object,
        admit_timeout: float | None = None,
        model: AsyncSlots | None = None,
        thread: concurrent.futures.Executor | None = None,
        urgent: bool = False,
    ) -> asyncio.Future[T]:
        """Admit ``fn(*args)`` and return the future of its result without waiting for it.

        ``thread``: run it there instead of on a pool thread (a model that must
        always compute from the same thread; it is admitted and counted here
        all the same).

        ``urgent``: a short job on the path to the caller's ears (recognising
        a turn, voicing a sentence). While one runs, a long job that calls ``yield_to_urgent``
        between its steps (the LLM, between tokens) waits, so on 2 cores the
        urgent job has the CPU to itself; the answer's later words, which play
        a second or more later, come that much later.

        ``model``: the slots of a model that serves fewer calls at once than the
        pool has threads (llama.cpp: one). It is taken first, so a job waiting
        for a busy model waits here, on the loop, not on a pool thread.
        Both slots are released by the worker thread when ``fn`` returns, so a
        caller that stops waiting does not free capacity the thread still uses.
        ``admit_timeout`` bounds the wait for both; past it: ``ProviderTimeout``.
        """
        wait = self.config.admit_timeout if admit_timeout is None else admit_timeout
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait
        if model is not None and not await model.acquire(wait):
            raise ProviderTimeout("executor", "model slot", wait)
        try:
            if not await self._slots.acquire(max(0.0, give_up - loop.time())):
                self.rejected += 1
                raise ProviderTimeout("executor", "executor slot", wait)
        except BaseException:
            if model is not None:
                model.release()
            raise

        def job() -> T:
            if urgent:
                with self._urgent_done:
                    self._urgent += 1
            try:
                return fn(*args)
            finally:
                if urgent:
                    with self._urgent_done:
                        self._urgent -= 1
                        self._urgent_done.notify_all()
                self._slots.release()
                if model is not None:
                    model.release()
                if self._slots.free == self._slots.count:  # the last job: the executor is idle
                    self.trimmer.idle()

        try:
            return loop.run_in_executor(thread or self._pool, job)
        except BaseException:
            self._slots.release()
            if model is not None:
                model.release()
            raise

    def yield_to_urgent(self, limit: float) -> float:
        """From a long job's thread, between its steps: wait while urgent jobs run,
        at most ``limit`` seconds; returns the time waited."""
        if not self._urgent:  # read without the lock: a step late at worst
            return 0.0
        started = time.perf_counter()
        with self._urgent_done:
            self._urgent_done.wait_for(lambda: self._urgent == 0, limit)
        waited = time.perf_counter() - started
        self.yielded_seconds += waited
        return waited

    async def run(
        self,
        fn: Callable[..., T],
        *args: object,
        admit_timeout: float | None = None,
        model: AsyncSlots | None = None,
    ) -> T:
        """Run ``fn(*args)`` in the pool and await its result."""
        future = await self.submit(fn, *args, admit_timeout=admit_timeout, model=model)
        return await future

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


_shared_lock = threading.Lock()
_shared: InferenceExecutor | None = None


def shared_executor() -> InferenceExecutor:
    """The process-wide executor (created on first use; ``VOXLINE_INFER_THREADS`` overrides the thread count)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            config = ExecutorConfig()
            if threads := int(os.environ.get("VOXLINE_INFER_THREADS", "0")):
                config = ExecutorConfig(threads=threads)
            _shared = InferenceExecutor(config)
            log.info("inference executor: %d threads, %d queued", config.threads, config.max_queued)
        return _shared


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    value: object = None
    loaded: bool = False


_loaded_lock = threading.Lock()
_loaded: dict[Hashable, _Entry] = {}


def load_shared(key: Hashable, loader: Callable[[], T]) -> T:
    """The model under ``key``, loaded by ``loader()`` the first time (once per process).

    Concurrent callers with the same key wait for the one load; a failed load is
    not cached, so the next caller tries again. Blocks: call it off the loop.
    """
    with _loaded_lock:
        entry = _loaded.setdefault(key, _Entry())
    with entry.lock:
        if not entry.loaded:
            entry.value = loader()
            entry.loaded = True
        return entry.value  # type: ignore[return-value]


def loaded_models() -> Mapping[Hashable, object]:
    with _loaded_lock:
        return {k: e.value for k, e in _loaded.items() if e.loaded}


class ChannelClosed(Exception):
    """The consumer went away; the producing thread should stop."""


_END = object()


class ThreadChannel(Generic[T]):
    """Bounded items from one worker thread to one coroutine.

    The thread calls ``put`` (blocks while ``capacity`` items are undelivered;
    raises ``ChannelClosed`` once the consumer cancelled) and finally
    ``close(error)``. The coroutine calls ``get`` (returns the next item, raises
    ``StopAsyncIteration`` at the end, or the thread's error). ``cancel`` (from
    the loop) sets the flag the thread sees at its next ``put`` or
    ``cancelled`` check, and wakes it if it is blocked on a full channel.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"channel capacity must be at least 1, got {capacity}")
        self._loop = asyncio.get_running_loop()
        # The thread holds a credit of _space for every item it hands over, so
        # the queue never holds more than capacity items plus the end marker.
        self._queue: asyncio.Queue[object] = asyncio.Queue(capacity + 1)
        self._space = threading.Semaphore(capacity)
        self._cancel = threading.Event()
        self.delivered = 0

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # -- worker thread side
    def put(self, item: T) -> None:
        self._space.acquire()
        if self._cancel.is_set():
            self._space.release()  # keep waking any other blocked put
            raise ChannelClosed()
        self._post(item)

    def close(self, error: BaseException | None = None) -> None:
        self._post(_END if error is None else _Failure(error))

    def _post(self, item: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError as exc:  # loop closed: nobody will read
            self._cancel.set()
            raise ChannelClosed() from exc

    # -- event loop side
    async def get(self) -> T:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # stay at the end for later gets
            raise StopAsyncIteration
        if isinstance(item, _Failure):
            self._queue.put_nowait(item)
            raise item.error
        self._space.release()
        self.delivered += 1
        return item  # type: ignore[return-value]

    def cancel(self) -> None:
        self._cancel.set()
        self._space.release()  # unblock a put waiting on a full channel


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException


async def load_model(
    executor: InferenceExecutor,
    provider: str,
    key: Hashable,
    loader: Callable[[], T],
    deadlines: Deadlines | None = None,
) -> T:
    """Load (once per process, shared by ``key``) in the executor; a missing or
    corrupt model is a permanent ``ProviderError`` naming what to install."""
    from .models import ModelError

    wait = (deadlines or Deadlines()).connect
    try:
        return await executor.run(load_shared, key, loader, admit_timeout=wait)
    except ModelError as exc:
        raise ProviderError(provider, str(exc), retryable=False) from exc


async def receive(
    channel: "ThreadChannel[T]", provider: str, deadlines: Deadlines, what: str = "audio"
) -> AsyncIterator[T]:
    """What a worker thread puts on ``channel``, with the first-result deadline on
    the first item and the idle deadline between the others."""
    first = True
    while True:
        limit = deadlines.first_result if first else deadlines.idle
        try:
            async with asyncio.timeout(limit):
                item = await channel.get()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise ProviderTimeout(provider, f"first {what}" if first else f"next {what}", limit) from None
        first = False
        yield item
