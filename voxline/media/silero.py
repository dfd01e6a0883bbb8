"""Silero VAD v6 on onnxruntime, batched across calls.

One ``session.run`` per tick serves every call of the process: Silero's ONNX
graph takes a batch (input [B, ctx+win], state [2, B, 128]), and a batch of 300
costs ~34 us per call against ~85 us for a call run alone, so batching is what
lets one core carry hundreds of calls.

``SileroModel`` resolves and verifies the ONNX file and owns the session.
``SileroBatcher`` (one per process and sample rate) owns every call's model
state as rows of pooled arrays:

- a stream ``register()``s for a slot (pools grow by doubling up to
  ``max_slots``; beyond that registration is refused) and ``release()``s it;
- ``submit(slot, window, pts, arrival)`` queues one window in the slot's
  bounded FIFO (``queue_depth``; overflow drops the oldest window, counted);
- each tick takes at most ONE window per slot — a slot's next window needs the
  state the current one produces — gathers them with fancy indexing, runs one
  batch in a single-thread executor (onnxruntime releases the GIL, so the event
  loop keeps running), scatters the new states back, and appends
  ``(pts, arrival, probability)`` to the slot's bounded result deque, which the
  stream's stage drains on its next frame.

Slots carry a generation number so that a result computed for a slot that was
released (and maybe handed to a new call) while its batch was in flight is
discarded rather than delivered to, or written into the state of, the new call.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import heapq
import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .clock import Clock, LoopClock

__all__ = [
    "SILERO_SHA256",
    "SILERO_PACKAGE",
    "SileroModelError",
    "SileroModel",
    "BatcherConfig",
    "BatcherFull",
    "SileroBatcher",
    "window_size",
    "context_size",
]

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
SILERO_PACKAGE = "silero-vad==6.2.3"
#: sha256 of data/silero_vad.onnx in silero-vad 6.2.3.
SILERO_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
STATE_SIZE = 128
_INSTALL_HINT = f"install it with: pip install --no-deps {SILERO_PACKAGE}"


def window_size(rate: int) -> int:
    """Samples per Silero window: 512 at 16 kHz, 256 at 8 kHz (32 ms)."""
    if rate == 16000:
        return 512
    if rate == 8000:
        return 256
    raise ValueError(f"Silero VAD runs at 8000 or 16000 Hz, got {rate}")


def context_size(rate: int) -> int:
    """Samples of the previous window prepended to each input: 64 at 16 kHz, 32 at 8 kHz."""
    return window_size(rate) // 8


class SileroModelError(RuntimeError):
    """The Silero ONNX file is missing or is not the file this code was tested with."""


def _package_model_path() -> Path:
    # find_spec locates the package without importing it: importing silero_vad
    # would pull in torch, which voxline does not depend on.
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise SileroModelError(f"the silero-vad package is not installed; {_INSTALL_HINT}")
    return Path(spec.origin).parent / "data" / "silero_vad.onnx"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class SileroModel:
    """The verified Silero v6 ONNX model and one onnxruntime session (1 thread).

    ``path`` defaults to the file shipped in the silero-vad package. ``sha256``
    is checked unless None (for a deliberately different model file).
    onnxruntime's ``run`` is thread-safe, so batchers at 8 and 16 kHz may share
    one model.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, sha256: str | None = SILERO_SHA256) -> None:
        import onnxruntime as ort  # deferred: importing it costs ~0.1 s, needed only here

        self.path = Path(path) if path is not None else _package_model_path()
        if not self.path.is_file():
            raise SileroModelError(f"Silero model file {self.path} does not exist; {_INSTALL_HINT}")
        if sha256 is not None:
            actual = _sha256(self.path)
            if actual != sha256.lower():
                raise SileroModelError(
                    f"Silero model file {self.path} has sha256 {actual}, expected {sha256} "
                    f"(the file of {SILERO_PACKAGE}); reinstall it with: pip install --no-deps "
                    f"--force-reinstall {SILERO_PACKAGE}"
                )
        options = ort.SessionOptions()
        # One thread: parallelism comes from batching calls, and the process
        # runs one event loop per core; more threads would fight the loop.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._sr = {8000: np.array(8000, dtype=np.int64), 16000: np.array(16000, dtype=np.int64)}
        log.info("Silero model loaded from %s", self.path)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> SileroModel:
        """The packaged model (or ``path``), verified against the pinned sha256."""
        return cls(path)

    def run(self, x: F32, state: F32, rate: int) -> tuple[F32, F32]:
        """One batch: x [B, ctx+win], state [2, B, 128] -> (probabilities [B], new state)."""
        out, state_n = self.session.run(None, {"input": x, "state": state, "sr": self._sr[rate]})
        return out[:, 0], state_n


@dataclass(frozen=True, slots=True)
class BatcherConfig:
    """``period``: seconds between ticks. ``queue_depth``: windows queued per slot
    before the oldest is dropped. ``initial_slots``/``max_slots``: the slot pool
    starts at the first and doubles up to the second. ``result_depth``: results
    kept per slot for its stage to drain."""

    period: float = 0.010
    queue_depth: int = 8
    initial_slots: int = 64
    max_slots: int = 4096
    result_depth: int = 16

    def __post_init__(self) -> None:
        if not 0.0 < self.period <= 1.0:
            raise ValueError(f"batcher period must be in (0, 1] s, got {self.period}")
        if self.queue_depth < 1 or self.result_depth < 1:
            raise ValueError("batcher queue_depth and result_depth must be at least 1")
        if not 1 <= self.initial_slots <= self.max_slots:
            raise ValueError(f"batcher needs 1 <= initial_slots <= max_slots, got {self.initial_slots}, {self.max_slots}")


def _resized(a: npt.NDArray[Any], axis: int, n: int) -> npt.NDArray[Any]:
    """``a`` with ``axis`` grown to ``n``, zero-filled past the old end."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, n - a.shape[axis])
    return np.pad(a, pad)


class BatcherFull(RuntimeError):
    """Every slot up to ``max_slots`` is taken: admit fewer calls to this process."""


Result = tuple[int, float, float]  # (window pts, window arrival, speech probability)
# (slots, their generations, their (pts, arrival) tags, input [B, ctx+win], state [2, B, 128])
_Batch = tuple[npt.NDArray[np.intp], npt.NDArray[np.int64], list[tuple[int, float]], F32, F32]


class SileroBatcher:
    """Shared Silero inference for every stream of one sample rate; see the module doc."""

    def __init__(
        self,
        model: SileroModel,
        rate: int = 16000,
        config: BatcherConfig | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.model = model
        self.rate = rate
        self.window = window_size(rate)
        self.context = context_size(rate)
        self.config = config if config is not None else BatcherConfig()
        self.clock: Clock = clock if clock is not None else LoopClock()
        self._capacity = 0
        self._depth = self.config.queue_depth
        self._states = np.zeros((2, 0, STATE_SIZE), np.float32)
        self._contexts = np.zeros((0, self.context), np.float32)
        self._ring = np.zeros((0, self._depth, self.window), np.float32)
        self._input = np.zeros((0, self.context + self.window), np.float32)
        self._head = np.zeros(0, np.intp)
        self._count = np.zeros(0, np.intp)
        self._gen = np.zeros(0, np.int64)
        self._tags: list[collections.deque[tuple[int, float]]] = []
        self._results: list[collections.deque[Result]] = []
        self._free: list[int] = []  # heap: the lowest free slot is reused first
        self._used: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._inflight: concurrent.futures.Future[tuple[F32, F32, int]] | None = None
        # counters
        self.batches = 0
        self.windows = 0
        self.max_batch = 0
        self.infer_ns = 0
        self.max_infer_ns = 0
        self.loop_ns = 0  # gather + scatter time on the event loop
        self.max_loop_ns = 0
        self.submitted = 0
        self.dropped = 0  # windows dropped by a full slot queue
        self.results_dropped = 0  # results a stage did not drain in time
        self.stale = 0  # results discarded: slot released during the batch
        self.ticks_late = 0
        self._grow(self.config.initial_slots)

    # -- slots ---------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def active(self) -> int:
        return len(self._used)

    def _grow(self, capacity: int) -> None:
        old = self._capacity
        # Existing rows are copied: slots keep their numbers, states and queues.
        self._states = _resized(self._states, 1, capacity)
        self._contexts = _resized(self._contexts, 0, capacity)
        self._ring = _resized(self._ring, 0, capacity)
        self._head = _resized(self._head, 0, capacity)
        self._count = _resized(self._count, 0, capacity)
        self._gen = _resized(self._gen, 0, capacity)
        self._input = np.zeros((capacity, self.context + self.window), np.float32)
        for _ in range(old, capacity):
            self._tags.append(collections.deque())
            self._results.append(collections.deque())
        for slot in range(old, capacity):
            heapq.heappush(self._free, slot)
        self._capacity = capacity
        if old:
            log.info("Silero batcher (%d Hz) grew to %d slots", self.rate, capacity)

    def register(self) -> int:
        """Take a slot for a new stream, with fresh model state. Raises BatcherFull."""
        if not self._free:
            if self._capacity >= self.config.max_slots:
                raise BatcherFull(
                    f"Silero batcher ({self.rate} Hz) has all {self._capacity} slots in use "
                    f"(max_slots={self.config.max_slots}); refuse the call or raise max_slots"
                )
            self._grow(min(self._capacity * 2, self.config.max_slots))
        slot = heapq.heappop(self._free)
        self._used.add(slot)
        self._states[:, slot] = 0.0
        self._contexts[slot] = 0.0
        self._head[slot] = 0
        self._count[slot] = 0
        self._gen[slot] += 1
        self._tags[slot].clear()
        self._results[slot].clear()
        return slot

    def release(self, slot: int) -> None:
        """Give a slot back; queued windows and undelivered results are discarded."""
        if slot not in self._used:
            raise ValueError(f"Silero batcher slot {slot} is not registered")
        self._used.discard(slot)
        self._gen[slot] += 1  # a batch in flight for this slot becomes stale
        self._count[slot] = 0
        self._tags[slot].clear()
        self._results[slot].clear()
        heapq.heappush(self._free, slot)

    def results(self, slot: int) -> collections.deque[Result]:
        """The slot's results, oldest first: its stage pops them from the left."""
        return self._results[slot]

    def pending(self, slot: int) -> int:
        """Windows queued for the slot and not yet taken into a batch."""
        return int(self._count[slot])

    def submit(self, slot: int, window: F32, pts: int, arrival: float = 0.0) -> None:
        """Queue one window (float32 in [-1, 1], ``self.window`` samples); copies it."""
        if slot not in self._used:
            raise ValueError(f"Silero batcher slot {slot} is not registered")
        count = int(self._count[slot])
        head = int(self._head[slot])
        depth = self._depth
        if count == depth:
            # Live audio cannot wait: drop the oldest window and keep the newest.
            self._head[slot] = head = (head + 1) % depth
            self._tags[slot].popleft()
            self.dropped += 1
            count -= 1
        self._ring[slot, (head + count) % depth] = window
        self._count[slot] = count + 1
        self._tags[slot].append((pts, arrival))
        self.submitted += 1

    # -- inference -----------------------------------------------------------

    def _gather(self) -> _Batch | None:
        count = self._count
        slots = np.flatnonzero(count)
        n = int(slots.size)
        if n == 0:
            return None
        heads = self._head[slots]
        x = self._input[:n]  # C-contiguous rows, reused between batches
        x[:, : self.context] = self._contexts[slots]
        x[:, self.context :] = self._ring[slots, heads]
        state = self._states[:, slots]  # fancy indexing: a contiguous copy
        # Take the windows (and their tags) out of the queues now, so submits
        # and releases during the batch see only what is still waiting.
        self._head[slots] = (heads + 1) % self._depth
        count[slots] -= 1
        all_tags = self._tags
        tags = [all_tags[slot].popleft() for slot in slots.tolist()]
        return slots, self._gen[slots], tags, x, state

    def _infer(self, x: F32, state: F32) -> tuple[F32, F32, int]:
        t0 = time.perf_counter_ns()
        probs, state_n = self.model.run(x, state, self.rate)
        return probs, state_n, time.perf_counter_ns() - t0

    def _scatter(self, batch: _Batch, probs: F32, state_n: F32) -> None:
        slots, gens, tags, x, _ = batch
        live = self._gen[slots] == gens
        if not live.all():
            self.stale += int(slots.size - live.sum())
            tags = [t for t, ok in zip(tags, live.tolist()) if ok]
            slots, x, probs, state_n = slots[live], x[live], probs[live], state_n[:, live]
        self._states[:, slots] = state_n
        self._contexts[slots] = x[:, -self.context :]
        results = self._results
        limit = self.config.result_depth
        for slot, (pts, arrival), p in zip(slots.tolist(), tags, probs.tolist()):
            res = results[slot]
            if len(res) >= limit:
                res.popleft()
                self.results_dropped += 1
            res.append((pts, arrival, p))

    async def run_once(self) -> int:
        """Run one batch (at most one window per slot) now; return its size."""
        if self._inflight is not None:
            if not self._inflight.done():
                raise RuntimeError("Silero batcher: run_once called while a batch is in flight")
            self._inflight = None  # left by a cancelled run_once: its results are lost
        if self._executor is None:
            # One thread: one batch at a time (a slot's next window needs this
            # batch's state), and a bounded share of the machine.
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="voxline-silero")
        t0 = time.perf_counter_ns()
        batch = self._gather()
        if batch is None:
            return 0
        t1 = time.perf_counter_ns()
        fut = self._inflight = self._executor.submit(self._infer, batch[3], batch[4])
        # If this await is cancelled (aclose), _inflight stays set so that
        # aclose can wait for the thread to finish the batch.
        probs, state_n, infer_ns = await asyncio.wrap_future(fut)
        self._inflight = None
        t2 = time.perf_counter_ns()
        self._scatter(batch, probs, state_n)
        n = int(batch[0].size)
        loop_ns = (t1 - t0) + (time.perf_counter_ns() - t2)
        self.batches += 1
        self.windows += n
        self.max_batch = max(self.max_batch, n)
        self.infer_ns += infer_ns
        self.max_infer_ns = max(self.max_infer_ns, infer_ns)
        self.loop_ns += loop_ns
        self.max_loop_ns = max(self.max_loop_ns, loop_ns)
        return n

    # -- lifecycle -----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the tick task on the running loop."""
        if self.running:
            raise RuntimeError("Silero batcher already started")
        self._task = asyncio.get_running_loop().create_task(
            self._tick(), name=f"voxline:silero-batcher:{self.rate}"
        )

    async def _tick(self) -> None:
        clock = self.clock
        period = self.config.period
        due = clock.now()
        while True:
            due += period
            now = clock.now()
            if now > due + period:
                # A batch overran whole periods: skip them rather than run a
                # burst of back-to-back catch-up ticks.
                self.ticks_late += 1
                due = now
            await clock.sleep_until(due)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # One bad batch must not silence VAD for every call in the process.
                log.exception("Silero batch failed")

    async def aclose(self) -> None:
        """Stop the tick task, wait for a batch in flight, stop the executor thread."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            try:
                await asyncio.wrap_future(inflight)
            except asyncio.CancelledError:
                # Cancelling the tick task cancels a batch the thread had not
                # started yet: nothing to wait for. Any other cancellation is
                # aclose's own and must propagate.
                if not inflight.cancelled():
                    raise
            except Exception:
                log.exception("Silero batch failed during shutdown")
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)  # idle by now: joins at once

    def stats(self) -> dict[str, object]:
        return {
            "rate": self.rate,
            "slots": self._capacity,
            "active": len(self._used),
            "batches": self.batches,
            "windows": self.windows,
            "max_batch": self.max_batch,
            "mean_batch": round(self.windows / self.batches, 2) if self.batches else 0.0,
            "infer_ms_total": round(self.infer_ns / 1e6, 3),
            "infer_us_per_window": round(self.infer_ns / self.windows / 1e3, 2) if self.windows else 0.0,
            "max_infer_ms": round(self.max_infer_ns / 1e6, 3),
            "max_loop_us": round(self.max_loop_ns / 1e3, 1),
            "submitted": self.submitted,
            "dropped": self.dropped,
            "results_dropped": self.results_dropped,
            "stale": self.stale,
            "ticks_late": self.ticks_late,
        }
