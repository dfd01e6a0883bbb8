"""Streaming TTS over ElevenLabs' ``POST /v1/text-to-speech/{voice_id}/stream``.

``output_format=pcm_<rate>`` (a query parameter) returns raw s16le mono at that
rate; authentication is the ``xi-api-key`` header. Errors come as
``{"detail": {"status": ..., "message": ...}}`` (or a list for 422 validation).
Rates above 24 kHz need a paid tier; 16 kHz suits telephony and STT-bound paths.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from ..base import PCM, Deadlines
from ..http import CallDeadlines, shared_session, stream_pcm16

__all__ = ["ElevenLabsTTS", "ELEVENLABS_PCM_RATES"]

log = logging.getLogger(__name__)

ELEVENLABS_PCM_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})


class ElevenLabsTTS:
    """``TextToSpeech`` on ElevenLabs' streaming endpoint."""

    def __init__(
        self,
        api_key: str,
        voice_id: str,
        *,
        model_id: str = "eleven_flash_v2_5",
        sample_rate: int = 16000,
        base_url: str = "https://api.elevenlabs.io",
        voice_settings: Mapping[str, Any] | None = None,
        language_code: str | None = None,
        name: str | None = None,
        deadlines: Deadlines | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if sample_rate not in ELEVENLABS_PCM_RATES:
            raise ValueError(
                f"ElevenLabs sample_rate {sample_rate} is not one of {sorted(ELEVENLABS_PCM_RATES)}"
            )
        self.name = name or f"elevenlabs:{model_id}"
        self.sample_rate = sample_rate
        self.url = f"{base_url.rstrip('/')}/v1/text-to-speech/{quote(voice_id, safe='')}/stream"
        self.deadlines = deadlines or Deadlines()
        self._session = session
        self._params = {"output_format": f"pcm_{sample_rate}"}
        self._headers = {"xi-api-key": api_key, "Content-Type": "application/json"}
        self._body: dict[str, Any] = {"model_id": model_id}
        if voice_settings:
            self._body["voice_settings"] = dict(voice_settings)
        if language_code:
            self._body["language_code"] = language_code

    async def synthesize(self, text: str, deadlines: Deadlines | None = None) -> AsyncIterator[PCM]:
        if not text.strip():
            return
        calls = CallDeadlines(self.name, deadlines or self.deadlines)
        body = orjson.dumps({**self._body, "text": text})
        session = self._session or shared_session()
        async with aclosing(
            stream_pcm16(
                self.name,
                session,
                self.url,
                calls=calls,
                body=body,
                headers=self._headers,
                params=self._params,
            )
        ) as pcm:
            async for chunk in pcm:
                yield chunk
