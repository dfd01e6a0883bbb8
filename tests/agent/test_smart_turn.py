"""The turn model: its input, its verdicts on real speech, and its deadline."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from voxline.agent.smart_turn import SmartTurn, SmartTurnConfig, features
from voxline.media.clock import FakeClock
from voxline.providers.executor import InferenceExecutor


def test_features_are_the_last_8_seconds_as_80_mel_bins_by_800_frames() -> None:
    short = features(np.zeros(16000, np.int16))
    long = features(np.random.default_rng(0).normal(0, 1000, 20 * 16000).astype(np.int16))
    assert short.shape == long.shape == (1, 80, 800)
    assert short.dtype == np.float32 and np.isfinite(long).all()


async def test_a_finished_sentence_is_complete_and_its_first_half_is_not(speech_dir: Path) -> None:
    audio, _ = sf.read(speech_dir / "librivox" / "sense_and_sensibility_01_austen_64kb-0890.wav", dtype="int16")
    model = SmartTurn()
    await model.load()
    whole = await model.judge(audio, deadline=30.0)
    half = await model.judge(audio[: len(audio) // 2], deadline=30.0)
    assert whole is not None and whole.complete, whole
    assert half is not None and not half.complete, half


async def test_a_slow_model_never_delays_the_turn_past_its_deadline() -> None:
    clock = FakeClock()
    release = threading.Event()

    def slow(_: np.ndarray) -> float:
        release.wait(10)  # a model stuck behind a busy CPU
        return 0.9

    executor = InferenceExecutor()
    model = SmartTurn(SmartTurnConfig(deadline=0.1), executor=executor, clock=clock, predict=slow)
    judged = asyncio.ensure_future(model.judge(np.zeros(16000, np.int16)))
    await clock.advance(0.05)
    assert not judged.done()
    await clock.advance(0.06)  # past the deadline on the turn's clock: no verdict
    assert await asyncio.wait_for(judged, 1.0) is None
    assert model.stats["late"] == 1
    release.set()


async def test_a_quick_model_gives_its_verdict_in_time() -> None:
    clock = FakeClock()
    model = SmartTurn(SmartTurnConfig(deadline=0.1, threshold=0.5), executor=InferenceExecutor(), clock=clock,
                      predict=lambda _: 0.2)
    verdict = await asyncio.wait_for(model.judge(np.zeros(16000, np.int16)), 5.0)
    assert verdict is not None and not verdict.complete and verdict.seconds <= 0.1
