"""Whisper speech recognition on faster-whisper (CTranslate2), embedded and offline.

Whisper is a batch model: it decodes a whole utterance at once. So a recognition
buffers what it is sent and decodes when told the caller stopped speaking
(``finalize``).

Short windows: whisper was trained on 30 s windows, and faster-whisper's
``transcribe`` pads every utterance to one, so a 1 s turn costs as much as a
30 s one (~0.34 s for tiny.en int8 on 2 threads, 0.2 s of it the encoder).
CTranslate2's encoder takes shorter inputs, and its cost is linear in them
(measured: 30 s 195 ms, 10 s 27 ms). A turn shorter than ``window_seconds``
minus a 2 s tail of silence is decoded in a ``window_seconds`` window (10 s
by default): ~0.07-0.1 s instead of ~0.34. Shorter windows are not safe:
measured on LibriVox and on synthesised questions, a window of the speech plus
1 s made the decoder repeat the utterance to its token limit on half the
clips (it "expects" speech to go on to the window's end), 5 s changed 35 of
155 words, 10 s changed 5 (and none of the LibriVox sentences), 20 s none.
Guards: a windowed decode may write at most 10 tokens per second of audio plus
16; one that reaches the limit is a loop; so is one that says a sentence twice
in a row (seen once through Opus: "What is the capital of France? What is the
capital of France?"). Such a final is decoded again in the full window
(counted in ``stats["full_retries"]``); such an interim says nothing, rather
than make the final wait behind a 30 s decode. Set ``window_seconds=None`` for
whisper's own 30 s decode on every turn. Interim results, off by default, re-decode the buffer every
``interim_interval_ms`` while audio arrives: each costs a full decode, which on
2 cores competes with the LLM and TTS, so enable them only where a UI shows them.

Decoding choices, each for latency or for voxline's own pipeline:

- ``beam_size=5``: the short window costs some accuracy with greedy search
  and beam search buys it back (``python -m benchmarks.stt``, tiny.en, real
  LibriVox sentences, WER / median decode): 30 s greedy 3.8% / 0.48 s,
  10 s greedy 7.1% / 0.11 s, **10 s beam 5 3.8% / 0.29 s**, 30 s beam 5
  2.7% / 0.64 s; on 1-3 s questions 10 s beam 5 takes 0.08 s against 0.34 s
  for 30 s greedy, same words.
- ``vad_filter=False``: voxline runs its own VAD and turn detection upstream.
- ``condition_on_previous_text=False`` and ``temperature=(0.0,)``: one pass,
  no fallback re-decodes, so a decode's cost is bounded; conditioning helps long
  dictation, not short turns, and feeds hallucinations forward.
- ``without_timestamps=True``: short turns need no timestamp tokens.

Noise or silence gives an empty final transcript, not an error: audio shorter
than ``min_seconds`` or below ``silence_peak`` is not decoded at all, and a
decode that the guard (guard.py: whisper's no-speech probability, mean
log-probability, repetition) says is not speech comes back with empty ``text``
and the reason in ``rejected`` (counted in ``stats["rejected"]``).

The model is loaded once per process (``executor.load_shared``) and shared by
every recognition; CTranslate2 serves ``num_workers`` decodes at once and the
rest wait for a model slot on the event loop, not on a pool thread.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from ..base import PCM, Deadlines, ProviderError, ProviderTimeout, Transcription
from ..executor import (
    AsyncSlots,
    InferenceExecutor,
    load_model,
    shared_executor,
)
from ..models import resolve
from .guard import GuardConfig, judge_decode

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
    beam_size: int = 5  # with the short window; see the module docstring
    language: str = "en"
    temperature: tuple[float, ...] = (0.0,)
    max_buffer_seconds: float = 30.0  # whisper's window; older audio is dropped and counted
    interim_interval_ms: int | None = None  # None: finals only
    window_seconds: float | None = 10.0  # encoder window for short turns; None: always 30 s
    min_interim_seconds: float = 0.5
    min_seconds: float = 0.1  # shorter utterances are not worth a decode
    silence_peak: int = 64  # int16 peak below which audio is taken as silence
    max_pending: int = 4  # utterances finalized but not yet decoded
    results_capacity: int = 16
    allow_download: bool = False
    cache_dir: Path | None = None
    guard: GuardConfig = GuardConfig()  # what makes a transcript not the caller's (guard.py)


@dataclass(frozen=True, slots=True)
class _Shared:
    model: WhisperModel
    slots: AsyncSlots
    tokenizer: Any  # faster_whisper.tokenizer.Tokenizer, for windowed decodes
    prompt: list[int]
    suppress: list[int]


FULL_FRAMES: Final = 3000  # whisper's 30 s window in 10 ms feature frames
TAIL_FRAMES: Final = 200  # silence a windowed decode keeps after the speech
TOKENS_PER_SECOND: Final = 10  # a windowed decode writing more is in a loop
MAX_NEW_TOKENS: Final = 224  # whisper's own limit per window


@dataclass(frozen=True, slots=True)
class _Job:
    audio: PCM
    final: bool
    utterance: int = 0  # finalizes before this job: interims of one utterance share it


_CLOSED: Final = object()


_SENTENCES = re.compile(r"[^.?!]+[.?!]*")


def repeats_a_sentence(text: str) -> bool:
    """Two consecutive sentences (of two words or more) are the same: the
    short-window decoder's loop, not what a caller says."""
    said = [" ".join(re.findall(r"[a-z0-9']+", m.group().lower())) for m in _SENTENCES.finditer(text)]
    said = [s for s in said if s]
    return any(a == b and " " in a for a, b in zip(said, said[1:]))


class WhisperSTT:
    """Speech to text with faster-whisper; cheap to construct, the model is shared per process."""

    name = "whisper"
    sample_rate = SAMPLE_RATE
    # Each finalize decodes what was sent since the last one as one utterance;
    # audio sent again is decoded again, not added (see agent/listener.py).
    whole_utterances = True

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
        self.stats = {"windowed": 0, "full": 0, "full_retries": 0, "rejected": 0}

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
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        multilingual = model.model.is_multilingual
        tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe",
                              language=c.language if multilingual else "en")  # fmt: skip
        prompt = model.get_prompt(tokenizer, [], without_timestamps=True)
        suppress = get_suppressed_tokens(tokenizer, [-1])
        return _Shared(model, AsyncSlots(c.num_workers), tokenizer, prompt, suppress)

    async def open(self, deadlines: Deadlines | None = None) -> WhisperRecognition:
        await self.load(deadlines)
        assert self._shared is not None
        return WhisperRecognition(self, self._shared, deadlines or Deadlines())

    # -- runs in a pool thread
    def _decode(self, shared: _Shared, audio: PCM, final: bool) -> Transcription:
        c = self.config
        # max/min rather than abs: abs(-32768) overflows int16.
        if len(audio) < c.min_seconds * SAMPLE_RATE or max(int(audio.max()), -int(audio.min())) < c.silence_peak:
            return Transcription("", final, None, 0.0, len(audio) / SAMPLE_RATE)
        samples = audio.astype(np.float32) / 32768.0
        if c.window_seconds is not None:
            result = self._decode_windowed(shared, samples, final, c.window_seconds)
            if result is not None:
                self.stats["windowed"] += 1
                return result
        self.stats["full"] += 1
        return self._decode_full(shared.model, samples, final)

    def _decode_windowed(self, shared: _Shared, samples: np.ndarray, final: bool, window: float) -> Transcription | None:
        """Decode in a window shorter than 30 s; None if the turn needs the full window."""
        from faster_whisper.audio import pad_or_trim

        c = self.config
        model = shared.model
        features = model.feature_extractor(samples)
        frames = features.shape[-1] + TAIL_FRAMES
        target = max(round(window * 100), math.ceil(frames / 100) * 100)
        if target >= FULL_FRAMES:
            return None
        seconds = len(samples) / SAMPLE_RATE
        limit = min(int(seconds * TOKENS_PER_SECOND) + 16, MAX_NEW_TOKENS)
        result = model.model.generate(
            model.encode(pad_or_trim(features, target)),
            [shared.prompt],
            beam_size=c.beam_size,
            # CTranslate2's whisper generates at most half of max_length (the
            # reference implementation's 224 of 448): ask for twice the limit.
            max_length=2 * limit,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=shared.suppress,
        )[0]
        tokens = result.sequences_ids[0]
        if len(tokens) >= limit:
            return self._looped(final, seconds, target, f"ran to {len(tokens)} tokens")
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        text = shared.tokenizer.decode(tokens).strip()
        if not text:
            return Transcription("", final, None, 0.0, seconds)
        if repeats_a_sentence(text):
            return self._looped(final, seconds, target, f"repeated a sentence ({text!r})")
        return self._judged(text, final, result.no_speech_prob, avg_logprob, 0.0, seconds)

    def _judged(self, text: str, final: bool, no_speech: float, avg_logprob: float,
                start: float, end: float) -> Transcription:
        """The transcript, or its rejection by the guard (counted; the text kept aside)."""
        reason = judge_decode(text, no_speech_prob=no_speech, avg_logprob=avg_logprob, config=self.config.guard)
        if reason:
            if final:
                self.stats["rejected"] += 1
            log.info("whisper: rejected %r: %s", text, reason)
            return Transcription("", final, None, start, end, rejected=reason, heard=text)
        return Transcription(text, final, math.exp(avg_logprob), start, end)

    def _looped(self, final: bool, seconds: float, frames: int, how: str) -> Transcription | None:
        """A windowed decode went into a loop. A final is decoded again in 30 s
        (None); an interim says nothing rather than make the final wait behind
        a 30 s decode."""
        if not final:
            return Transcription("", final, None, 0.0, seconds)
        self.stats["full_retries"] += 1
        log.info("whisper: a %.1fs turn %s in a %.0fs window; decoding it in 30 s", seconds, how, frames / 100)
        return None

    def _decode_full(self, model: WhisperModel, samples: np.ndarray, final: bool) -> Transcription:
        c = self.config
        segments, _info = model.transcribe(
            samples,
            language=c.language,
            beam_size=c.beam_size,
            temperature=list(c.temperature),
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        # faster-whisper drops the segments its own no-speech rule judges silent
        # (no_speech_threshold, log_prob_threshold: the guard's first test).
        segs = list(segments)  # the generator is what decodes
        text = " ".join(s.text.strip() for s in segs).strip()
        if not segs or not text:
            return Transcription("", final, None, 0.0, len(samples) / SAMPLE_RATE)
        no_speech = max(s.no_speech_prob for s in segs)
        avg_logprob = sum(s.avg_logprob for s in segs) / len(segs)
        return self._judged(text, final, no_speech, avg_logprob, segs[0].start, segs[-1].end)

    async def decode(self, shared: _Shared, audio: PCM, final: bool, timeout: float) -> Transcription:
        future = await self._executor.submit(
            self._decode, shared, audio, final, admit_timeout=timeout, model=shared.slots, urgent=True
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
        self._utterance = 0
        # (utterance, samples, result) of the newest interim: a final of the same
        # audio is that result again, not a second decode.
        self._last_interim: tuple[int, int, Transcription] | None = None
        self.reused_interims = 0
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
        self._jobs.put_nowait(_Job(audio, final=False, utterance=self._utterance))

    async def finalize(self) -> None:
        """Queue what was sent since the last finalize for its final transcript."""
        if self._closed or self._worker.done():
            raise ProviderError(self._stt.name, "recognition is closed", retryable=False)
        job = _Job(self._take(), final=True, utterance=self._utterance)
        self._utterance += 1
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
                last = self._last_interim
                if job.final and last is not None and last[:2] == (job.utterance, len(job.audio)):
                    # Nothing was said since that interim (the caller paused just
                    # after it was taken): it is the final transcript.
                    self.reused_interims += 1
                    await self._results.put(dataclasses.replace(last[2], final=True))
                    continue
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
                if not job.final and result.text:
                    self._last_interim = (job.utterance, len(job.audio), result)
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
