"""Provider contracts: streaming STT, LLM and TTS.

Every provider is a small object with a ``name`` and one streaming method. The
contracts are the narrowest that both an embedded model and a vendor's socket can
honour:

- **STT** is session-long: ``await stt.open()`` gives a ``Recognition`` that takes
  audio as it arrives (``send``), is told when the caller's speech ended
  (``finalize``: produce the final transcript of what was sent since the last
  finalize), and yields interim and final ``Transcription``s from ``results()``.
  A batch engine (whisper) decodes at ``finalize``; a streaming service (Deepgram)
  forwards audio as it comes and maps ``finalize`` to its own flush message.
- **LLM**: ``llm.stream(messages)`` is an async iterator of text pieces (tokens or
  small groups of them). Cancelling the consuming task, or ``aclose()`` on the
  iterator, releases the model or socket promptly.
- **TTS**: ``tts.synthesize(text)`` is an async iterator of int16 mono PCM chunks
  at ``tts.sample_rate``; cancellable the same way.

Deadlines are data (``Deadlines``): how long to connect, to the first result,
and between results. Providers receive them and must honour them; the resilience
layer also enforces them from outside, so a provider that hangs cannot hold a
turn. Failures are ``ProviderError`` (with ``retryable``) or ``ProviderTimeout``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "Deadlines",
    "ProviderError",
    "ProviderTimeout",
    "Transcription",
    "Message",
    "Recognition",
    "SpeechToText",
    "LanguageModel",
    "TextToSpeech",
    "PCM",
]

PCM = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Time limits of one provider call, in seconds."""

    connect: float = 3.0
    first_result: float = 5.0
    idle: float = 5.0
    total: float = 30.0


class ProviderError(Exception):
    """A provider failed. ``retryable``: another attempt (or provider) may succeed."""

    def __init__(self, provider: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retryable = retryable


class ProviderTimeout(ProviderError):
    """A provider missed one of its deadlines (``phase`` says which)."""

    def __init__(self, provider: str, phase: str, seconds: float) -> None:
        super().__init__(provider, f"no {phase} within {seconds:.3f}s")
        self.phase = phase
        self.seconds = seconds


@dataclass(frozen=True, slots=True)
class Transcription:
    text: str
    final: bool
    confidence: float | None = None
    # Seconds of audio the result covers, where the engine says.
    start: float | None = None
    end: float | None = None
    # Not the caller's words (see stt/guard.py): why, and the text rejected;
    # ``text`` is then empty, so nothing answers it.
    rejected: str = ""
    heard: str = ""


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@runtime_checkable
class Recognition(Protocol):
    """One caller's running speech recognition (see the module docstring)."""

    async def send(self, pcm: PCM) -> None: ...

    async def finalize(self) -> None: ...

    def results(self) -> AsyncIterator[Transcription]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SpeechToText(Protocol):
    name: str
    sample_rate: int

    async def open(self, deadlines: Deadlines | None = None) -> Recognition: ...


@runtime_checkable
class LanguageModel(Protocol):
    name: str

    def stream(
        self, messages: Sequence[Message], deadlines: Deadlines | None = None
    ) -> AsyncIterator[str]: ...


@runtime_checkable
class TextToSpeech(Protocol):
    name: str
    sample_rate: int

    def synthesize(self, text: str, deadlines: Deadlines | None = None) -> AsyncIterator[PCM]: ...
