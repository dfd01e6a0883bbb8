"""Streaming TTS over OpenAI's ``POST /v1/audio/speech``.

``response_format: "pcm"`` is raw 24 kHz, 16-bit signed little-endian, mono, sent
with chunked transfer as it is synthesized; no header to strip. The rate is fixed
by the API, so ``sample_rate`` is not configurable. Compatible servers that copy
this endpoint (e.g. Kokoro-FastAPI, Speaches) work through ``base_url`` if they
honour ``pcm`` at 24 kHz.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import aiohttp
import orjson

from ..base import PCM, Deadlines
from ..http import CallDeadlines, shared_session, stream_pcm16

__all__ = ["OpenAITTS", "OPENAI_PCM_RATE"]

log = logging.getLogger(__name__)

OPENAI_PCM_RATE = 24000


class OpenAITTS:
    """``TextToSpeech`` on OpenAI's speech endpoint (``tts-1``, ``gpt-4o-mini-tts``)."""

    sample_rate = OPENAI_PCM_RATE

    def __init__(
        self,
        api_key: str,
        *,
        model: str = "gpt-4o-mini-tts",
        voice: str = "alloy",
        base_url: str = "https://api.openai.com/v1",
        instructions: str | None = None,
        speed: float | None = None,
        name: str | None = None,
        deadlines: Deadlines | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name or f"openai-tts:{model}"
        self.url = base_url.rstrip("/") + "/audio/speech"
        self.deadlines = deadlines or Deadlines()
        self._session = session
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._body: dict[str, Any] = {"model": model, "voice": voice, "response_format": "pcm"}
        if instructions:  # gpt-4o-mini-tts only; tts-1 rejects it
            self._body["instructions"] = instructions
        if speed is not None:
            self._body["speed"] = speed

    async def synthesize(self, text: str, deadlines: Deadlines | None = None) -> AsyncIterator[PCM]:
        if not text.strip():
            return  # the API answers 400 to empty input; there is nothing to say
        calls = CallDeadlines(self.name, deadlines or self.deadlines)
        body = orjson.dumps({**self._body, "input": text})
        session = self._session or shared_session()
        async with aclosing(
            stream_pcm16(self.name, session, self.url, calls=calls, body=body, headers=self._headers)
        ) as pcm:
            async for chunk in pcm:
                yield chunk
