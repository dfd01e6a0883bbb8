"""Piper text to speech (piper-tts 1.8, onnxruntime), embedded and offline.

Piper phonemises with its own statically linked espeak-ng and runs a VITS model
per sentence; ``PiperVoice.synthesize`` yields one audio chunk per sentence, so
that is the unit handed back (the agent already feeds TTS a sentence at a time;
a long input still starts playing after its first sentence). First audio takes
~50-80 ms for a short sentence at a real-time factor of 0.03-0.06 (MODELS.md).

Each sentence is synthesised in the shared executor and sent to the event loop
through a bounded ``ThreadChannel``; cancelling stops the job before the next
sentence (a sentence's ONNX run cannot be interrupted; it takes tens of ms).

The voice (~230 MB, ~1.5 s to load) is loaded once per process and shared.
onnxruntime could run two sentences at once, but on 2 cores that only splits
them, so one synthesis runs at a time per voice (``concurrency``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..base import PCM, Deadlines, ProviderError
from ..executor import (
    AsyncSlots,
    ChannelClosed,
    InferenceExecutor,
    ThreadChannel,
    load_model,
    receive,
    shared_executor,
)
from ..models import find_entry, resolve

if TYPE_CHECKING:
    from piper import PiperVoice, SynthesisConfig

__all__ = ["PiperConfig", "PiperTTS"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PiperConfig:
    model: str = "piper-joe-medium"  # a known name, a local .onnx (its .onnx.json beside it), or hf:...
    sample_rate: int = 22050  # what the voice is expected to produce; load() reads the real one
    length_scale: float | None = None  # < 1 speaks faster; None: the voice's own
    noise_scale: float | None = None
    noise_w_scale: float | None = None
    volume: float = 1.0
    intra_op_threads: int = 2
    concurrency: int = 1
    queue_chunks: int = 4  # sentences synthesised ahead of the consumer
    allow_download: bool = False
    cache_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class _Shared:
    voice: PiperVoice
    slots: AsyncSlots


class PiperTTS:
    """Piper voice; cheap to construct, the voice is shared per process."""

    name = "piper"

    def __init__(self, config: PiperConfig | None = None, *, executor: InferenceExecutor | None = None) -> None:
        self.config = config or PiperConfig()
        self._executor = executor or shared_executor()
        self._shared: _Shared | None = None
        self.sample_rate = self.config.sample_rate

    async def load(self, deadlines: Deadlines | None = None) -> None:
        if self._shared is not None:
            return
        c = self.config
        key = ("piper", c.model, c.cache_dir, c.intra_op_threads, c.concurrency)
        shared = await load_model(self._executor, self.name, key, self._load, deadlines)
        self._shared = shared
        self.sample_rate = shared.voice.config.sample_rate

    def _load(self) -> _Shared:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig as VoiceConfig

        c = self.config
        onnx = find_entry(resolve(c.model, cache_dir=c.cache_dir, allow_download=c.allow_download), ".onnx")
        started = time.perf_counter()
        # PiperVoice.load would create the session with default options (a
        # thread per core for intra-op work): build it ourselves to bound it.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = c.intra_op_threads
        options.inter_op_num_threads = 1
        # Idle intra-op threads would spin between sentences, on the core the
        # LLM is writing the rest of the answer on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_cpu_mem_arena = False
        session = onnxruntime.InferenceSession(str(onnx), sess_options=options, providers=["CPUExecutionProvider"])
        config = VoiceConfig.from_dict(json.loads(Path(f"{onnx}.json").read_text("utf-8")))
        voice = PiperVoice(session=session, config=config)
        # Warm the phonemiser and the graph: the first call pays ~100 ms extra.
        for _ in voice.synthesize("Hello."):
            pass
        log.info("piper %s loaded in %.2fs (%d Hz)", onnx, time.perf_counter() - started, config.sample_rate)
        if config.sample_rate != c.sample_rate:
            log.warning("piper voice %s speaks at %d Hz, configured %d", onnx.name, config.sample_rate, c.sample_rate)
        return _Shared(voice, AsyncSlots(c.concurrency))

    def _synthesis_config(self) -> SynthesisConfig:
        from piper import SynthesisConfig

        c = self.config
        return SynthesisConfig(
            length_scale=c.length_scale, noise_scale=c.noise_scale, noise_w_scale=c.noise_w_scale, volume=c.volume
        )

    async def synthesize(self, text: str, deadlines: Deadlines | None = None) -> AsyncGenerator[PCM, None]:
        d = deadlines or Deadlines()
        await self.load(d)
        shared = self._shared
        assert shared is not None
        if not text.strip():
            return
        channel: ThreadChannel[PCM] = ThreadChannel(self.config.queue_chunks)
        syn = self._synthesis_config()

        def job() -> None:
            try:
                for chunk in shared.voice.synthesize(text, syn):
                    channel.put(np.ascontiguousarray(chunk.audio_int16_array, dtype=np.int16))
                    if channel.cancelled:  # checked between sentences: stop before the next
                        return
                channel.close()
            except ChannelClosed:
                pass
            except BaseException as exc:
                channel.close(ProviderError(self.name, f"synthesis failed: {exc!r}"))

        done = await self._executor.submit(job, admit_timeout=d.first_result, model=shared.slots, urgent=True)
        try:
            async for chunk in receive(channel, self.name, d):
                yield chunk
        finally:
            channel.cancel()
            done.add_done_callback(_log_failure)


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.warning("piper job ended with %r", exc)
