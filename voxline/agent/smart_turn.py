"""Smart Turn v3.2: is the caller's turn complete, judged from the sound of it.

The model (8.7 MB ONNX, BSD-2-Clause, by Daily) ships inside the ``pipecat-ai``
wheel; voxline takes the one file from the pinned wheel (installed with
``--no-deps``), checks its sha256 (models.py) and runs it with onnxruntime. It
never imports pipecat.

Input: the last 8 s of the turn at 16 kHz (zero-padded in front), normalised
to zero mean and unit variance, as whisper's 80-bin log-mel spectrogram
(n_fft 400, hop 160: 800 frames), shape [1, 80, 800]. Output: the probability
that the speaker has finished. One inference costs ~10-20 ms of CPU on one
thread.

A turn model must never make the caller wait longer than the deadline it is
given: ``judge`` returns ``None`` when the model has not answered by then (a
busy executor, a slow machine), and the turn goes on as if there were no turn
model. Pipecat's own runs stall 3 s when its model says "incomplete"; here
the caller of ``judge`` owns the wait, and it is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from voxline.media.clock import Clock, LoopClock
from voxline.providers.base import PCM, ProviderTimeout
from voxline.providers.executor import InferenceExecutor, load_model, shared_executor
from voxline.providers.models import resolve

__all__ = ["SmartTurnConfig", "SmartTurn", "features", "Verdict"]

log = logging.getLogger(__name__)

RATE: Final = 16000
WINDOW: Final = 8 * RATE  # the model hears the last 8 s
N_FFT: Final = 400
HOP: Final = 160


@dataclass(frozen=True, slots=True)
class SmartTurnConfig:
    model: str = "smart-turn-v3.2"  # a known name or a local .onnx
    threshold: float = 0.5  # probability at or above which the turn is complete
    deadline: float = 0.1  # seconds the turn may wait for a verdict
    threads: int = 1


@dataclass(frozen=True, slots=True)
class Verdict:
    probability: float
    complete: bool
    seconds: float  # how long the verdict took (wall time, admission included)


_MEL: dict[str, np.ndarray] = {}


def _mel_filters() -> np.ndarray:
    """Whisper's 80 slaney mel filters for 16 kHz, n_fft 400 (as faster-whisper computes them)."""
    if "f" not in _MEL:
        from faster_whisper.feature_extractor import FeatureExtractor

        _MEL["f"] = FeatureExtractor(feature_size=80).mel_filters.astype(np.float64)
    return _MEL["f"]


def features(audio: PCM) -> np.ndarray:
    """The model's input for ``audio`` (16 kHz int16, any length): [1, 80, 800] float32."""
    x = audio.astype(np.float32)[-WINDOW:] / 32768.0
    x = np.pad(x, (WINDOW - len(x), 0))
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), (N_FFT // 2, N_FFT // 2), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * np.hanning(N_FFT + 1)[:-1], axis=-1)) ** 2
    mel = np.maximum(1e-10, _mel_filters() @ power.T)
    log_spec = np.log10(mel)[:, :-1]
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    out: np.ndarray = ((log_spec + 4.0) / 4.0).astype(np.float32)[None]
    return out


class SmartTurn:
    """The turn model, loaded once per process, run in the inference executor."""

    name = "smart-turn"

    def __init__(
        self,
        config: SmartTurnConfig | None = None,
        *,
        executor: InferenceExecutor | None = None,
        clock: Clock | None = None,
        predict: Callable[[np.ndarray], float] | None = None,
    ) -> None:
        self.config = config or SmartTurnConfig()
        self._executor = executor or shared_executor()
        self._clock = clock or LoopClock()
        self._predict = predict  # given: a stand-in model (tests); None: the ONNX session
        self.stats = {"judged": 0, "complete": 0, "late": 0}

    async def load(self) -> None:
        if self._predict is None:
            session = await load_model(self._executor, self.name, ("smart-turn", self.config.model,
                                                                  self.config.threads), self._load)
            self._predict = lambda feats: float(session.run(None, {"input_features": feats})[0].reshape(-1)[0])

    def _load(self) -> Any:
        import onnxruntime as ort

        path = resolve(self.config.model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.config.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        started = time.perf_counter()
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        log.info("smart turn %s loaded in %.2fs", path, time.perf_counter() - started)
        return session

    def probability(self, audio: PCM) -> float:
        """P(turn complete) of ``audio``, computed here and now (blocks: off the loop)."""
        assert self._predict is not None, "load() first"
        return self._predict(features(audio))

    async def judge(self, audio: PCM, deadline: float | None = None) -> Verdict | None:
        """The verdict on the turn so far, or None if it is not in by ``deadline``
        seconds from now (the default: the configured one). The model's work is
        not waited for past it; what it computes later is dropped."""
        await self.load()
        limit = self.config.deadline if deadline is None else deadline
        start = self._clock.now()
        try:
            future = await self._executor.submit(self.probability, audio, admit_timeout=limit, urgent=True)
        except ProviderTimeout as exc:  # the executor is full: no verdict
            log.debug("smart turn not admitted: %s", exc)
            self.stats["late"] += 1
            return None
        waiter: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(future))
        timer: asyncio.Future[Any] = asyncio.ensure_future(self._clock.sleep_until(start + limit))
        try:
            await asyncio.wait([waiter, timer], return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if not waiter.done():
            waiter.cancel()
            self.stats["late"] += 1
            return None
        p = waiter.result()
        complete = p >= self.config.threshold
        self.stats["judged"] += 1
        self.stats["complete"] += complete
        return Verdict(p, complete, self._clock.now() - start)
