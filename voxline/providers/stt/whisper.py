"""Whisper speech recognition on faster-whisper (CTranslate2), embedded and offline.

Whisper is a batch model: it decodes a whole utterance at once, and a call costs
nearly the same for 1 s as for 5 s of audio (the encoder always sees a 30 s
window; ~0.3 s for tiny.en int8 on 2 threads, MODELS.md). So a recognition
buffers what it is sent and decodes when told the caller stopped speaking
(``finalize``). Interim results, off by default, re-decode the buffer every
``interim_interval_ms`` while audio arrives: each costs a full decode, which on
2 cores competes with the LLM and TTS, so enable them only where a UI shows them.

Decoding choices, each for latency or for voxline's own pipeline:

- ``beam_size=1`` (greedy) by default: on real LibriVox speech tiny.en gave
  6.7% WER greedy against 4.0% with beam 5 (MODELS.md), for ~30% more decode
  time. Raise it where accuracy matters more than the turn's latency.
- ``vad_filter=False``: voxline runs its own VAD and turn detection upstream.
- ``condition_on_previous_text=False`` and ``temperature=(0.0,)``: one pass,
  no fallback re-decodes, so a decode's cost is bounded; conditioning helps long
  dictation, not short turns, and feeds hallucinations forward.
- ``without_timestamps=True``: short turns need no timestamp tokens.

Noise or silence gives an empty final transcript, not an error: whisper's own
no-speech test drops segments it judges silent, and audio shorter than
``min_seconds`` or below ``silence_peak`` is not decoded at all.

The model is loaded once per process (``executor.load_shared``) and shared by
every recognition; CTranslate2 serves ``num_workers`` decodes at once and the
rest wait for a model slot on the event loop, not on a pool thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from ..base import PCM, Deadlines, ProviderError, ProviderTimeout, Transcription
from ..executor import (
    AsyncSlots,
    InferenceExecutor,
    load_model,
    shared_executor,
)
from ..models import resolve

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

__all__ = ["WhisperConfig", "WhisperSTT", "WhisperRecognition"]

log = logging.getLogger(__name__)

SAMPLE_RATE: Final = 16000


@dataclass(frozen=True, slots=True)
class WhisperConfig:
    model: str = "whisper-tiny.en"  # a known name, a local CTranslate2 folder, or hf:owner/repo
    compute_type: str = "int8"
    cpu_threads: int = 2
    num_workers: int = 1  # decodes CTranslate2 runs at once; 2 cores gain nothing from more
    beam_size: int = 1
    language: str = "en"
    temperature: tuple[float, ...] = (0.0,)
    max_buffer_seconds: float = 30.0  # whisper's window; older audio is dropped and counted
    interim_interval_ms: int | None = None  # None: finals only
    min_interim_seconds: float = 0.5
    min_seconds: float = 0.1  # shorter utterances are not worth a decode
    silence_peak: int = 64  # int16 peak below which audio is taken as silence
    max_pending: int = 4  # utterances finalized but not yet decoded
    results_capacity: int = 16
    allow_download: bool = False
    cache_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class _Shared:
    model: WhisperModel
    slots: AsyncSlots


@dataclass(frozen=True, slots=True)
class _Job:
    audio: PCM
    final: bool


_CLOSED: Final = object()


class WhisperSTT:
    """Speech to text with faster-whisper; cheap to construct, the model is shared per process."""

    name = "whisper"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        config: WhisperConfig | None = None,
        *,
        executor: InferenceExecutor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or WhisperConfig()
        self._executor = executor or shared_executor()
        self._clock = clock
        self._shared: _Shared | None = None

    async def load(self, deadlines: Deadlines | None = None) -> None:
        """Resolve, verify and load the model in the executor (first call per process pays)."""
        if self._shared is not None:
            return
        c = self.config
        key = ("whisper", c.model, c.cache_dir, c.compute_type, c.cpu_threads, c.num_workers)
        # The first load (1-1.5 s) must not count against a call's connect
        # deadline; later calls find the model loaded and return at once.
        self._shared = await load_model(self._executor, self.name, key, self._load, deadlines)

    def _load(self) -> _Shared:
        from faster_whisper import WhisperModel

        c = self.config
        path = resolve(c.model, cache_dir=c.cache_dir, allow_download=c.allow_download)
        started = time.perf_counter()
        model = WhisperModel(
            str(path),
            device="cpu",
            compute_type=c.compute_type,
            cpu_threads=c.cpu_threads,
            num_workers=c.num_workers,
            local_files_only=True,
        )
        log.info("whisper %s loaded in %.2fs", path, time.perf_counter() - started)
        return _Shared(model, AsyncSlots(c.num_workers))

    async def open(self, deadlines: Deadlines | None = None) -> WhisperRecognition:
        await self.load(deadlines)
        assert self._shared is not None
        return WhisperRecognition(self, self._shared, deadlines or Deadlines())

    # -- runs in a pool thread
    def _decode(self, model: WhisperModel, audio: PCM, final: bool) -> Transcription:
        c = self.config
        # max/min rather than abs: abs(-32768) overflows int16.
        if len(audio) < c.min_seconds * SAMPLE_RATE or max(int(audio.max()), -int(audio.min())) < c.silence_peak:
            return Transcription("", final, None, 0.0, len(audio) / SAMPLE_RATE)
        segments, _info = model.transcribe(
            audio.astype(np.float32) / 32768.0,
            language=c.language,
            beam_size=c.beam_size,
            temperature=list(c.temperature),
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        segs = list(segments)  # the generator is what decodes
        text = " ".join(s.text.strip() for s in segs).strip()
        if not segs:
            return Transcription("", final, None, 0.0, len(audio) / SAMPLE_RATE)
        confidence = math.exp(sum(s.avg_logprob for s in segs) / len(segs))
        return Transcription(text, final, confidence, segs[0].start, segs[-1].end)

    async def decode(self, shared: _Shared, audio: PCM, final: bool, timeout: float) -> Transcription:
        future = await self._executor.submit(
            self._decode, shared.model, audio, final, admit_timeout=timeout, model=shared.slots
        )
        return await future


class WhisperRecognition:
    """One caller's recognition: buffers audio, decodes at ``finalize``.

    Results come out in order of finalize. A decode error or a missed deadline
    ends the recognition: ``results()`` raises it, and the caller (or the
    fallback chain) opens a new one.
    """

    def __init__(self, stt: WhisperSTT, shared: _Shared, deadlines: Deadlines) -> None:
        self._stt = stt
        self._shared = shared
        self._deadlines = deadlines
        c = stt.config
        self._max_samples = int(c.max_buffer_seconds * SAMPLE_RATE)
        self._chunks: collections.deque[PCM] = collections.deque()
        self._samples = 0
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue(c.max_pending)
        self._results: asyncio.Queue[object] = asyncio.Queue(c.results_capacity)
        self._interim_at = stt._clock()
        self._closed = False
        self.dropped_samples = 0
        self._worker = asyncio.create_task(self._run(), name="whisper-recognition")

    async def send(self, pcm: PCM) -> None:
        if self._closed:
            raise ProviderError(self._stt.name, "recognition is closed", retryable=False)
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise ValueError(f"expected mono int16 PCM, got {pcm.dtype} with shape {pcm.shape}")
        self._chunks.append(pcm)
        self._samples += len(pcm)
        self._trim()
        self._maybe_interim()

    def _trim(self) -> None:
        excess = self._samples - self._max_samples
        if excess <= 0:
            return
        if self.dropped_samples == 0:
            log.warning("whisper buffer over %.0fs: dropping the oldest audio", self._stt.config.max_buffer_seconds)
        self.dropped_samples += excess
        self._samples -= excess
        while excess:
            head = self._chunks[0]
            if len(head) <= excess:
                self._chunks.popleft()
                excess -= len(head)
            else:
                self._chunks[0] = head[excess:]
                excess = 0

    def _take(self) -> PCM:
        audio = np.concatenate(list(self._chunks)) if self._chunks else np.zeros(0, np.int16)
        self._chunks.clear()
        self._samples = 0
        return audio

    def _maybe_interim(self) -> None:
        c = self._stt.config
        if c.interim_interval_ms is None or self._samples < c.min_interim_seconds * SAMPLE_RATE:
            return
        now = self._stt._clock()
        if now - self._interim_at < c.interim_interval_ms / 1000 or not self._jobs.empty():
            return  # too soon, or a decode is already waiting: skip rather than queue
        self._interim_at = now
        audio = np.concatenate(list(self._chunks))
        self._jobs.put_nowait(_Job(audio, final=False))

    async def finalize(self) -> None:
        """Queue what was sent since the last finalize for its final transcript."""
        if self._closed or self._worker.done():
            raise ProviderError(self._stt.name, "recognition is closed", retryable=False)
        job = _Job(self._take(), final=True)
        self._interim_at = self._stt._clock()
        try:
            async with asyncio.timeout(self._deadlines.idle):
                await self._jobs.put(job)
        except TimeoutError:
            raise ProviderTimeout(self._stt.name, "decode queue space", self._deadlines.idle) from None

    async def _run(self) -> None:
        first = self._deadlines.first_result
        try:
            while True:
                job = await self._jobs.get()
                if not job.final and not self._jobs.empty():
                    continue  # a newer request supersedes this interim
                try:
                    async with asyncio.timeout(first):
                        result = await self._stt.decode(self._shared, job.audio, job.final, first)
                except (TimeoutError, ProviderTimeout):
                    await self._results.put(ProviderTimeout(self._stt.name, "final transcript", first))
                    return
                except Exception as exc:
                    log.exception("whisper decode failed")
                    await self._results.put(ProviderError(self._stt.name, f"decode failed: {exc}"))
                    return
                await self._results.put(result)
        except asyncio.CancelledError:
            pass

    async def results(self) -> AsyncIterator[Transcription]:
        while True:
            item = await self._results.get()
            if item is _CLOSED:
                return
            if isinstance(item, ProviderError):
                raise item
            assert isinstance(item, Transcription)
            yield item

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)
        if self._results.full():  # make room for the end marker; the reader is gone or done
            self._results.get_nowait()
        self._results.put_nowait(_CLOSED)
