"""Silero model loading and the cross-call batcher.

The central test: windows of several real recordings, batched together in
changing combinations, give the same probabilities (within 1e-5) as each
recording run alone, sequentially, through the model with its own state and
context. That proves each call's state and context are kept apart and carried
from window to window correctly, through pool growth as well.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import shutil
import sys
import threading
import time
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soxr

from voxline.media.clock import FakeClock
from voxline.media.silero import (
    SILERO_SHA256,
    BatcherConfig,
    BatcherFull,
    SileroBatcher,
    SileroModel,
    SileroModelError,
    context_size,
    window_size,
)

DATA = Path("/usr/share/pocketsphinx/test/data")
F32 = npt.NDArray[np.float32]
RECORDINGS = (
    "goforward.raw",
    "something.raw",
    "numbers.raw",
    "librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
    "cards/001.wav",
    "cards/002.wav",
)


def recording(name: str, rate: int = 16000) -> npt.NDArray[np.int16]:
    path = DATA / name
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: these tests need real recorded speech from Debian's "
            "pocketsphinx-testdata (apt-get install pocketsphinx-testdata)"
        )
    if path.suffix == ".raw":
        pcm = np.fromfile(path, dtype="<i2").astype(np.int16)
    else:
        with wave.open(str(path)) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    return pcm if rate == 16000 else soxr.resample(pcm, 16000, rate).astype(np.int16)


def windows(pcm: npt.NDArray[np.int16], rate: int) -> list[F32]:
    win = window_size(rate)
    return [(pcm[i : i + win] / 32768.0).astype(np.float32) for i in range(0, len(pcm) - win + 1, win)]


def sequential(model: SileroModel, wins: list[F32], rate: int) -> list[float]:
    """The reference: one stream alone, batch of one, its own state and context."""
    ctx = np.zeros(context_size(rate), np.float32)
    state = np.zeros((2, 1, 128), np.float32)
    probs: list[float] = []
    for w in wins:
        x = np.concatenate([ctx, w])[None, :]
        p, state = model.run(x, state, rate)
        probs.append(float(p[0]))
        ctx = x[0, -len(ctx) :]
    return probs


async def until(cond: Callable[[], bool], what: str) -> None:
    """Wait for the executor thread (not for time): yield to the loop until cond holds."""
    deadline = time.monotonic() + 10.0
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0)


@pytest.fixture(scope="module")
def model() -> SileroModel:
    return SileroModel()


@pytest.fixture
async def batcher(model: SileroModel) -> AsyncIterator[SileroBatcher]:
    b = SileroBatcher(model, 16000, clock=FakeClock())
    yield b
    await b.aclose()


# -- the model -------------------------------------------------------------------


def test_model_resolves_packaged_file_without_importing_the_package(model: SileroModel) -> None:
    spec = importlib.util.find_spec("silero_vad")
    assert spec is not None and spec.origin is not None
    assert model.path == Path(spec.origin).parent / "data" / "silero_vad.onnx"
    assert hashlib.sha256(model.path.read_bytes()).hexdigest() == SILERO_SHA256
    assert "silero_vad" not in sys.modules  # importing it would pull in torch
    assert SileroModel.load().path == model.path


def test_model_session_is_single_threaded(model: SileroModel) -> None:
    # onnxruntime exposes no getter for the thread counts on a session; check the
    # graph's contract instead, which the batcher relies on.
    names = [i.name for i in model.session.get_inputs()], [o.name for o in model.session.get_outputs()]
    assert names == (["input", "state", "sr"], ["output", "stateN"])


def test_model_missing_file_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(SileroModelError, match=r"pip install --no-deps silero-vad==6\.2\.3"):
        SileroModel(tmp_path / "nope.onnx")


def test_model_package_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(SileroModelError, match=r"not installed.*pip install --no-deps silero-vad==6\.2\.3"):
        SileroModel()


def test_model_sha256_mismatch(model: SileroModel, tmp_path: Path) -> None:
    bad = tmp_path / "silero_vad.onnx"
    shutil.copy(model.path, bad)
    with bad.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(SileroModelError, match=r"sha256 .* expected 1a153a22.*pip install --no-deps"):
        SileroModel(bad)
    with pytest.raises(SileroModelError, match="expected 00"):
        SileroModel(model.path, sha256="00" * 32)


def test_window_sizes() -> None:
    assert (window_size(16000), context_size(16000)) == (512, 64)
    assert (window_size(8000), context_size(8000)) == (256, 32)
    with pytest.raises(ValueError, match="8000 or 16000"):
        window_size(44100)


# -- batched == sequential ---------------------------------------------------------


@pytest.mark.parametrize("rate", [16000, 8000])
async def test_batched_equals_sequential(model: SileroModel, rate: int) -> None:
    streams = [windows(recording(n, rate), rate) for n in RECORDINGS]
    refs = [sequential(model, w, rate) for w in streams]
    # Start with 2 slots so the pools grow (2 -> 4 -> 8) while streams are live.
    b = SileroBatcher(model, rate, BatcherConfig(initial_slots=2, max_slots=8), clock=FakeClock())
    try:
        slots: dict[int, int] = {}
        got: list[list[float]] = [[] for _ in streams]
        sent = [0] * len(streams)
        sizes: list[int] = []
        rnd = 0
        while any(len(g) < len(s) for g, s in zip(got, streams)):
            for i, wins in enumerate(streams):
                if rnd == 5 * i:  # staggered starts: the batch membership keeps changing
                    slots[i] = b.register()
                if i in slots and sent[i] < len(wins):
                    # Stream 1 sends two windows, then none: one waits a tick.
                    for _ in range((2 if rnd % 2 == 0 else 0) if i == 1 else 1):
                        if sent[i] < len(wins):
                            b.submit(slots[i], wins[sent[i]], pts=sent[i] * window_size(rate))
                            sent[i] += 1
            sizes.append(await b.run_once())
            for i, slot in slots.items():
                res = b.results(slot)
                while res:
                    pts, _, p = res.popleft()
                    assert pts == len(got[i]) * window_size(rate)  # in order, none lost
                    got[i].append(p)
            rnd += 1
        assert b.capacity == 8 and b.dropped == 0 and b.stale == 0
        assert max(sizes) == len(streams) and min(s for s in sizes if s) == 1
        for g, ref in zip(got, refs):
            np.testing.assert_allclose(g, ref, atol=1e-5, rtol=0)
        allp = np.concatenate(refs)
        assert allp.max() > 0.9 and allp.min() < 0.05  # real speech and real pauses
        assert b.windows == sum(len(s) for s in streams) and b.batches == sum(1 for s in sizes if s)
        assert b.max_batch == len(streams) and b.infer_ns > 0
    finally:
        await b.aclose()


async def test_one_window_per_slot_per_batch(batcher: SileroBatcher) -> None:
    wins = windows(recording("goforward.raw"), 16000)[:3]
    slot = batcher.register()
    for k, w in enumerate(wins):
        batcher.submit(slot, w, pts=k * 512, arrival=float(k))
    assert batcher.pending(slot) == 3
    assert [await batcher.run_once() for _ in range(4)] == [1, 1, 1, 0]
    assert [(pts, arrival) for pts, arrival, _ in batcher.results(slot)] == [(0, 0.0), (512, 1.0), (1024, 2.0)]


# -- slots -------------------------------------------------------------------------


async def test_released_slot_is_reused_with_fresh_state(model: SileroModel, batcher: SileroBatcher) -> None:
    speech = windows(recording("something.raw"), 16000)[:40]
    a, b = batcher.register(), batcher.register()
    for w in speech:  # slot a accumulates speech state
        batcher.submit(a, w, 0)
        batcher.submit(b, w, 0)
        await batcher.run_once()
    batcher.release(a)
    assert batcher.active == 1
    c = batcher.register()
    assert c == a  # the lowest free slot is reused
    fresh = windows(recording("goforward.raw"), 16000)[:20]
    got = []
    for w in fresh:
        batcher.submit(c, w, 0)
        await batcher.run_once()
        got.append(batcher.results(c).popleft()[2])
    np.testing.assert_allclose(got, sequential(model, fresh, 16000), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not registered"):
        batcher.release(99)
    with pytest.raises(ValueError, match="not registered"):
        batcher.submit(b + 1, fresh[0], 0)


async def test_release_during_batch_discards_stale_result(model: SileroModel, batcher: SileroBatcher) -> None:
    speech = windows(recording("something.raw"), 16000)
    slot = batcher.register()
    for w in speech[:30]:
        batcher.submit(slot, w, 0)
        await batcher.run_once()
    batcher.submit(slot, speech[30], 0)
    task = asyncio.get_running_loop().create_task(batcher.run_once())
    await asyncio.sleep(0)  # the batch is gathered and in the executor
    with pytest.raises(RuntimeError, match="in flight"):
        await batcher.run_once()
    batcher.release(slot)
    new = batcher.register()
    assert new == slot
    assert await task == 1
    assert batcher.stale == 1 and len(batcher.results(new)) == 0
    # The new call's state was not overwritten by the old call's batch.
    fresh = speech[:10]
    got = []
    for w in fresh:
        batcher.submit(new, w, 0)
        await batcher.run_once()
        got.append(batcher.results(new).popleft()[2])
    np.testing.assert_allclose(got, sequential(model, fresh, 16000), atol=1e-5, rtol=0)


async def test_slots_grow_by_doubling_then_refuse(model: SileroModel) -> None:
    b = SileroBatcher(model, 16000, BatcherConfig(initial_slots=2, max_slots=6), clock=FakeClock())
    slots = [b.register() for _ in range(2)]
    assert b.capacity == 2
    slots.append(b.register())
    assert b.capacity == 4
    slots += [b.register(), b.register()]
    assert b.capacity == 6  # doubling capped at max_slots
    slots.append(b.register())
    with pytest.raises(BatcherFull, match=r"all 6 slots in use \(max_slots=6\)"):
        b.register()
    assert sorted(slots) == list(range(6))
    b.release(slots[3])
    assert b.register() == slots[3]
    await b.aclose()


# -- bounded queues ----------------------------------------------------------------


async def test_queue_overflow_drops_oldest_and_counts(batcher: SileroBatcher) -> None:
    depth = batcher.config.queue_depth
    wins = windows(recording("goforward.raw"), 16000)[: depth + 3]
    slot = batcher.register()
    for k, w in enumerate(wins):
        batcher.submit(slot, w, pts=k * 512)
    assert batcher.dropped == 3 and batcher.pending(slot) == depth and batcher.submitted == depth + 3
    while await batcher.run_once():
        pass
    assert [pts for pts, _, _ in batcher.results(slot)] == [k * 512 for k in range(3, depth + 3)]


async def test_overflow_while_a_window_is_in_flight(batcher: SileroBatcher) -> None:
    depth = batcher.config.queue_depth
    wins = windows(recording("goforward.raw"), 16000)[: depth + 2]
    slot = batcher.register()
    batcher.submit(slot, wins[0], pts=0)
    task = asyncio.get_running_loop().create_task(batcher.run_once())
    await asyncio.sleep(0)  # window 0 is in the executor, out of the queue
    for k in range(1, depth + 2):
        batcher.submit(slot, wins[k], pts=k * 512)
    await task
    assert batcher.dropped == 1
    while await batcher.run_once():
        pass
    assert [pts for pts, _, _ in batcher.results(slot)] == [0] + [k * 512 for k in range(2, depth + 2)]


async def test_undrained_results_are_bounded(model: SileroModel) -> None:
    b = SileroBatcher(model, 16000, BatcherConfig(result_depth=4), clock=FakeClock())
    slot = b.register()
    for k, w in enumerate(windows(recording("goforward.raw"), 16000)[:6]):
        b.submit(slot, w, pts=k)
        await b.run_once()
    assert b.results_dropped == 2 and [pts for pts, _, _ in b.results(slot)] == [2, 3, 4, 5]
    await b.aclose()


@pytest.mark.parametrize(
    "kwargs",
    [{"period": 0.0}, {"queue_depth": 0}, {"result_depth": 0}, {"initial_slots": 0}, {"initial_slots": 9, "max_slots": 8}],
)
def test_batcher_config_rejects_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="batcher"):
        BatcherConfig(**kwargs)  # type: ignore[arg-type]


# -- the tick task -----------------------------------------------------------------


async def test_tick_runs_on_the_injected_clock_and_stops_cleanly(model: SileroModel) -> None:
    clock = FakeClock()
    b = SileroBatcher(model, 16000, BatcherConfig(period=0.01), clock=clock)
    await b.start()
    assert b.running
    with pytest.raises(RuntimeError, match="already started"):
        await b.start()
    wins = windows(recording("goforward.raw"), 16000)[:2]
    slot = b.register()
    b.submit(slot, wins[0], pts=0)
    await clock.settle()
    await clock.advance(0.009)
    assert b.batches == 0  # nothing before the first period has passed
    await clock.advance(0.002)
    await until(lambda: b.batches == 1, "the first tick's batch")
    b.submit(slot, wins[1], pts=512)
    await clock.advance(0.01)
    await until(lambda: b.batches == 2, "the second tick's batch")
    assert [pts for pts, _, _ in b.results(slot)] == [0, 512]
    # Stop with a batch in flight: aclose waits for it and ends the thread.
    b.submit(slot, wins[0], pts=1024)
    await clock.advance(0.01)
    await b.aclose()
    assert not b.running
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert not [t for t in threading.enumerate() if t.name.startswith("voxline-silero")]
    await b.aclose()  # idempotent
    stats = b.stats()
    assert stats["batches"] in (2, 3) and stats["max_batch"] == 1 and stats["dropped"] == 0
