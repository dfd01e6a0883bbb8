"""OpenAI, ElevenLabs and Deepgram TTS over HTTP: request shape, PCM assembly, failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
import numpy as np
import pytest

from voxline.providers.base import (
    PCM,
    Deadlines,
    ProviderError,
    ProviderTimeout,
    TextToSpeech,
)
from voxline.providers.http import HttpStatusError
from voxline.providers.tts.deepgram_tts import DeepgramTTS
from voxline.providers.tts.elevenlabs import ElevenLabsTTS
from voxline.providers.tts.openai_tts import OpenAITTS

from .fake_vendors import AUDIO_CHUNK, Behaviour, FakeVendors, tone

FAST = Deadlines(connect=2.0, first_result=2.0, idle=2.0, total=10.0)
TEXT = "Your table is booked for nine."

# Every test here must leave no task behind (readers, keep-alives, abandoned calls).
pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


Factory = Callable[[FakeVendors, aiohttp.ClientSession], TextToSpeech]


def openai(v: FakeVendors, s: aiohttp.ClientSession) -> TextToSpeech:
    return OpenAITTS("sk-test", base_url=v.url("/v1"), voice="nova", deadlines=FAST, session=s)


def elevenlabs(v: FakeVendors, s: aiohttp.ClientSession) -> TextToSpeech:
    return ElevenLabsTTS("xi-test", "JBFqnCBsd6RMkjVDRZzb", base_url=v.url(), sample_rate=16000,
                         deadlines=FAST, session=s)


def deepgram(v: FakeVendors, s: aiohttp.ClientSession) -> TextToSpeech:
    return DeepgramTTS("dg-test", base_url=v.url(), sample_rate=8000, deadlines=FAST, session=s)


VENDORS: dict[str, tuple[Factory, int, str]] = {
    "openai_tts": (openai, 24000, "openai"),
    "elevenlabs": (elevenlabs, 16000, "elevenlabs"),
    "deepgram_tts": (deepgram, 8000, "deepgram"),
}
ALL = pytest.mark.parametrize("key", list(VENDORS))


async def collect(it: AsyncIterator[PCM], into: list[PCM] | None = None) -> list[PCM]:
    out = [] if into is None else into
    async for chunk in it:
        out.append(chunk)
    return out


@ALL
async def test_streams_exact_samples(vendors: FakeVendors, session: aiohttp.ClientSession, key: str) -> None:
    factory, rate, _ = VENDORS[key]
    tts = factory(vendors, session)
    assert tts.sample_rate == rate
    chunks = await collect(tts.synthesize(TEXT))
    # The server writes 999-byte pieces: samples straddle writes, and survive whole.
    assert len(chunks) > 1
    assert all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    expected = np.frombuffer(tone(rate), dtype="<i2")
    assert np.array_equal(np.concatenate(chunks), expected)


async def test_openai_request_shape(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    tts = OpenAITTS("sk-test", base_url=vendors.url("/v1"), model="tts-1", voice="nova", speed=1.1,
                    deadlines=FAST, session=session)
    await collect(tts.synthesize(TEXT))
    req = vendors.last("openai_tts")
    assert req.path == "/v1/audio/speech"
    assert req.headers["Authorization"] == "Bearer sk-test"
    assert req.body == {"model": "tts-1", "voice": "nova", "response_format": "pcm", "speed": 1.1,
                        "input": TEXT}


async def test_elevenlabs_request_shape(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    tts = ElevenLabsTTS("xi-test", "JBFqnCBsd6RMkjVDRZzb", base_url=vendors.url(), sample_rate=22050,
                        voice_settings={"stability": 0.5}, deadlines=FAST, session=session)
    chunks = await collect(tts.synthesize(TEXT))
    assert sum(c.size for c in chunks) == len(tone(22050)) // 2
    req = vendors.last("elevenlabs")
    assert req.path == "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream"
    assert req.query == {"output_format": "pcm_22050"}
    assert req.headers["xi-api-key"] == "xi-test"
    assert "Authorization" not in req.headers
    assert req.body == {"model_id": "eleven_flash_v2_5", "voice_settings": {"stability": 0.5}, "text": TEXT}


async def test_deepgram_request_shape(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    tts = DeepgramTTS("dg-test", base_url=vendors.url(), model="aura-2-thalia-en", sample_rate=16000,
                      deadlines=FAST, session=session)
    await collect(tts.synthesize(TEXT))
    req = vendors.last("deepgram_tts")
    assert req.path == "/v1/speak"
    assert req.query == {"model": "aura-2-thalia-en", "encoding": "linear16", "sample_rate": "16000",
                         "container": "none"}
    assert req.headers["Authorization"] == "Token dg-test"
    assert req.body == {"text": TEXT}


def test_unsupported_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="ElevenLabs sample_rate 12000"):
        ElevenLabsTTS("k", "v", sample_rate=12000)
    with pytest.raises(ValueError, match="Deepgram linear16 sample_rate 22050"):
        DeepgramTTS("k", sample_rate=22050)


@ALL
async def test_blank_text_sends_nothing(vendors: FakeVendors, session: aiohttp.ClientSession, key: str) -> None:
    tts = VENDORS[key][0](vendors, session)
    assert await collect(tts.synthesize("  \n")) == []
    assert vendors.requests == []


@ALL
@pytest.mark.parametrize(
    ("behaviour", "retryable"),
    [(Behaviour.HTTP_401, False), (Behaviour.HTTP_429, True), (Behaviour.HTTP_500, True)],
)
async def test_http_errors(vendors: FakeVendors, session: aiohttp.ClientSession, key: str,
                           behaviour: Behaviour, retryable: bool) -> None:
    factory, _, family = VENDORS[key]
    vendors.set(key, behaviour)
    with pytest.raises(HttpStatusError) as err:
        await collect(factory(vendors, session).synthesize(TEXT))
    assert err.value.status == behaviour.value
    assert err.value.retryable is retryable
    expected = {"openai": {401: "Incorrect API key", 429: "Rate limit", 500: "server had an error"},
                "elevenlabs": {401: "Invalid API key", 429: "concurrent requests", 500: "internal server error"},
                "deepgram": {401: "INVALID_AUTH", 429: "TOO_MANY_REQUESTS", 500: "internal error"}}
    assert expected[family][int(behaviour.value)] in str(err.value)


@ALL
async def test_slow_first_byte(vendors: FakeVendors, session: aiohttp.ClientSession, key: str) -> None:
    vendors.set(key, Behaviour.SLOW_FIRST_BYTE, delay=5.0)
    d = Deadlines(connect=1.0, first_result=0.2, idle=1.0, total=10.0)
    with pytest.raises(ProviderTimeout) as err:
        await collect(VENDORS[key][0](vendors, session).synthesize(TEXT, d))
    assert err.value.phase == "first result"


@ALL
async def test_stall_mid_stream(vendors: FakeVendors, session: aiohttp.ClientSession, key: str) -> None:
    vendors.set(key, Behaviour.STALL)
    got: list[PCM] = []
    d = Deadlines(connect=1.0, first_result=1.0, idle=0.2, total=10.0)
    with pytest.raises(ProviderTimeout) as err:
        await collect(VENDORS[key][0](vendors, session).synthesize(TEXT, d), got)
    assert err.value.phase == "data (idle)"
    assert sum(c.size for c in got) == 3 * AUDIO_CHUNK // 2  # what came before the stall


@ALL
async def test_drop_mid_stream(vendors: FakeVendors, session: aiohttp.ClientSession, key: str) -> None:
    vendors.set(key, Behaviour.DROP)
    got: list[PCM] = []
    with pytest.raises(ProviderError, match="dropped mid-stream") as err:
        await collect(VENDORS[key][0](vendors, session).synthesize(TEXT), got)
    assert err.value.retryable
    assert got


@ALL
async def test_half_sample_at_end_is_dropped_with_a_warning(vendors: FakeVendors, session: aiohttp.ClientSession,
                                                           key: str, caplog: pytest.LogCaptureFixture) -> None:
    factory, rate, _ = VENDORS[key]
    vendors.set(key, Behaviour.MALFORMED)
    with caplog.at_level(logging.WARNING, logger="voxline.providers.http"):
        chunks = await collect(factory(vendors, session).synthesize(TEXT))
    assert np.array_equal(np.concatenate(chunks), np.frombuffer(tone(rate), dtype="<i2"))
    assert "half a sample" in caplog.text


@ALL
async def test_cancel_closes_connection(vendors: FakeVendors, session: aiohttp.ClientSession, key: str) -> None:
    vendors.set(key, Behaviour.STALL)
    first = asyncio.Event()

    async def play() -> None:
        async for _ in VENDORS[key][0](vendors, session).synthesize(TEXT):
            first.set()

    task = asyncio.create_task(play())
    await asyncio.wait_for(first.wait(), 2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(vendors.disconnected.wait(), 2.0)
