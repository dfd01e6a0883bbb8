"""Counting what each provider is asked and how it answers, for the metrics.

``Metered`` wraps a provider of any kind with the same contract and records
requests, failures and the time to the first result (first transcript, token or
audio) in a ``ProviderStats``. Wrapping outside the providers keeps every engine
free of metrics code; the counters are plain integers read at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from .base import PCM, Deadlines, Message, Recognition, Transcription

__all__ = ["ProviderStats", "MeteredSTT", "MeteredLLM", "MeteredTTS"]


@dataclass(slots=True)
class ProviderStats:
    provider: str
    kind: str  # stt | llm | tts
    requests: int = 0
    failures: int = 0
    first_result_count: int = 0
    first_result_seconds: float = 0.0  # total, for a mean

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "kind": self.kind,
            "requests": self.requests,
            "failures": self.failures,
            "first_result_count": self.first_result_count,
            "first_result_seconds": self.first_result_seconds,
        }


async def _metered(stats: ProviderStats, it: AsyncIterator[Any]) -> AsyncIterator[Any]:
    stats.requests += 1
    started = time.monotonic()
    first = True
    try:
        async for item in it:
            if first:
                stats.first_result_count += 1
                stats.first_result_seconds += time.monotonic() - started
                first = False
            yield item
    except Exception:
        stats.failures += 1
        raise
    finally:
        close = getattr(it, "aclose", None)
        if close is not None:
            await close()


class MeteredLLM:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.stats = ProviderStats(inner.name, "llm")

    def stream(self, messages: Sequence[Message], deadlines: Deadlines | None = None, *,
               tools: Sequence[Any] | None = None) -> AsyncIterator[Any]:
        if tools:
            return _metered(self.stats, self.inner.stream(messages, deadlines, tools=tools))
        return _metered(self.stats, self.inner.stream(messages, deadlines))

    def __getattr__(self, name: str) -> Any:  # load(), warm(), chain ... of the engine
        return getattr(self.inner, name)


class MeteredTTS:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.stats = ProviderStats(inner.name, "tts")

    @property
    def sample_rate(self) -> int:
        return int(self.inner.sample_rate)  # known for sure only after load()

    @sample_rate.setter
    def sample_rate(self, rate: int) -> None:
        self.inner.sample_rate = rate

    def synthesize(self, text: str, deadlines: Deadlines | None = None) -> AsyncIterator[PCM]:
        return _metered(self.stats, self.inner.synthesize(text, deadlines))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _MeteredRecognition:
    def __init__(self, inner: Recognition, stats: ProviderStats) -> None:
        self.inner = inner
        self.stats = stats
        self._asked: float | None = None  # when the last finalize was asked

    async def send(self, pcm: PCM) -> None:
        await self.inner.send(pcm)

    async def finalize(self) -> None:
        self._asked = time.monotonic()
        await self.inner.finalize()

    async def results(self) -> AsyncIterator[Transcription]:
        try:
            async for result in self.inner.results():
                if result.final:
                    self.stats.requests += 1
                    asked, self._asked = self._asked, None
                    if asked is not None:
                        self.stats.first_result_count += 1
                        self.stats.first_result_seconds += time.monotonic() - asked
                yield result
        except Exception:
            self.stats.failures += 1
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()


class MeteredSTT:
    """Counts final transcripts as requests; latency is finalize to final."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.sample_rate = inner.sample_rate
        self.stats = ProviderStats(inner.name, "stt")

    async def open(self, deadlines: Deadlines | None = None) -> Recognition:
        try:
            rec = await self.inner.open(deadlines)
        except Exception:
            self.stats.failures += 1
            raise
        return _MeteredRecognition(rec, self.stats)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
