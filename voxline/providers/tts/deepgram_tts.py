"""Streaming TTS over Deepgram Aura's REST ``POST /v1/speak``.

``encoding=linear16&container=none&sample_rate=N`` returns raw s16le mono (the
REST default container is ``wav``, whose 44-byte header would be heard as a
click: ``none`` avoids it). The body is ``{"text": ...}``; authentication is
``Authorization: Token <key>``. Errors come as ``{"err_code", "err_msg",
"request_id"}``. Audio streams as it is synthesized.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

import aiohttp
import orjson

from ..base import PCM, Deadlines
from ..http import CallDeadlines, shared_session, stream_pcm16

__all__ = ["DeepgramTTS", "DEEPGRAM_LINEAR16_RATES"]

log = logging.getLogger(__name__)

DEEPGRAM_LINEAR16_RATES = frozenset({8000, 16000, 24000, 32000, 48000})


class DeepgramTTS:
    """``TextToSpeech`` on Deepgram's speak endpoint."""

    def __init__(
        self,
        api_key: str,
        *,
        model: str = "aura-2-thalia-en",
        sample_rate: int = 24000,
        base_url: str = "https://api.deepgram.com",
        name: str | None = None,
        deadlines: Deadlines | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if sample_rate not in DEEPGRAM_LINEAR16_RATES:
            raise ValueError(
                f"Deepgram linear16 sample_rate {sample_rate} is not one of "
                f"{sorted(DEEPGRAM_LINEAR16_RATES)}"
            )
        self.name = name or f"deepgram-tts:{model}"
        self.sample_rate = sample_rate
        self.url = base_url.rstrip("/") + "/v1/speak"
        self.deadlines = deadlines or Deadlines()
        self._session = session
        self._params = {
            "model": model,
            "encoding": "linear16",
            "sample_rate": str(sample_rate),
            "container": "none",
        }
        self._headers = {"Authorization": f"Token {api_key}", "Content-Type": "application/json"}

    async def synthesize(self, text: str, deadlines: Deadlines | None = None) -> AsyncIterator[PCM]:
        if not text.strip():
            return
        calls = CallDeadlines(self.name, deadlines or self.deadlines)
        session = self._session or shared_session()
        async with aclosing(
            stream_pcm16(
                self.name,
                session,
                self.url,
                calls=calls,
                body=orjson.dumps({"text": text}),
                headers=self._headers,
                params=self._params,
            )
        ) as pcm:
            async for chunk in pcm:
                yield chunk
