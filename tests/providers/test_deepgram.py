"""DeepgramSTT against a local server speaking Deepgram's live (listen v1) protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import numpy as np
import pytest

from voxline.media.clock import FakeClock
from voxline.providers.base import (
    Deadlines,
    ProviderError,
    ProviderTimeout,
    Recognition,
    Transcription,
)
from voxline.providers.http import HttpStatusError
from voxline.providers.stt.deepgram import DeepgramRecognition, DeepgramSTT

from .fake_vendors import Behaviour, FakeVendors

FAST = Deadlines(connect=2.0, first_result=2.0, idle=2.0, total=10.0)
HALF_SECOND = np.zeros(8000, dtype=np.int16)  # 16 kHz: one interim per half second of audio

# Every test here must leave no task behind (readers, keep-alives, abandoned calls).
pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


def stt(vendors: FakeVendors, session: aiohttp.ClientSession, **kw: object) -> DeepgramSTT:
    return DeepgramSTT("dg-test", vendors.ws_url(), deadlines=FAST, session=session, **kw)  # type: ignore[arg-type]


async def until(cond: Callable[[], bool], seconds: float = 2.0) -> None:
    """Wait for the server to have seen something (bounded; not a timing assertion)."""
    for _ in range(int(seconds / 0.005)):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def take(rec: Recognition, n: int) -> list[Transcription]:
    out: list[Transcription] = []
    it = rec.results()
    while len(out) < n:
        out.append(await asyncio.wait_for(it.__anext__(), 2.0))
    return out


async def test_handshake_query_and_auth(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    rec = await stt(vendors, session, model="nova-3", endpointing=300).open()
    try:
        req = vendors.last("listen")
        assert req.path == "/v1/listen"
        assert req.headers["Authorization"] == "Token dg-test"
        assert req.query == {
            "model": "nova-3", "encoding": "linear16", "sample_rate": "16000", "channels": "1",
            "interim_results": "true", "punctuate": "true", "smart_format": "false",
            "endpointing": "300", "vad_events": "false", "language": "en-US",
        }
    finally:
        await rec.aclose()
    default = stt(vendors, session)
    assert default.params["endpointing"] == "false" and default.sample_rate == 16000


async def test_interims_then_final_on_finalize(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    rec = await stt(vendors, session).open()
    assert isinstance(rec, Recognition)
    for _ in range(3):
        await rec.send(HALF_SECOND)
    got = await take(rec, 3)
    assert [t.text for t in got] == ["hello", "hello world", "hello world how"]
    assert not any(t.final for t in got)
    assert got[0].confidence == pytest.approx(0.91)
    await rec.finalize()
    (final,) = await take(rec, 1)
    assert final.final and final.text == "hello world how"
    assert final.start == 0.0 and final.end == pytest.approx(1.5)
    assert vendors.audio_bytes == 3 * HALF_SECOND.nbytes
    await rec.aclose()
    assert [c["type"] for c in vendors.control] == ["Finalize", "CloseStream"]
    # The server ends with Metadata and a 1000 close: results() ends cleanly.
    assert [t async for t in rec.results()] == []


async def test_final_segments_are_joined_into_one_utterance(vendors: FakeVendors,
                                                            session: aiohttp.ClientSession) -> None:
    vendors.set("listen", flavour="segments")
    rec = await stt(vendors, session).open()
    for _ in range(3):
        await rec.send(HALF_SECOND)
    await take(rec, 3)
    await rec.finalize()
    # An is_final segment ("hello") then the from_finalize rest: one interim of the
    # committed part, then one final with the whole utterance.
    got = await take(rec, 2)
    assert got == [
        Transcription("hello", False, None, 0.0, pytest.approx(1.5)),  # type: ignore[arg-type]
        Transcription("hello world how", True, pytest.approx(0.91), 0.0, pytest.approx(1.5)),  # type: ignore[arg-type]
    ]
    await rec.aclose()


async def test_utterance_end_closes_an_utterance(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    rec = await stt(vendors, session, utterance_end_ms=1000, vad_events=True).open()
    await rec.send(HALF_SECOND)
    await rec.send(HALF_SECOND)
    await rec.finalize()
    got = await take(rec, 4)  # SpeechStarted is not a result
    # Interims, the committed segment (still an interim: the utterance is open), then
    # UtteranceEnd closes it.
    assert [(t.text, t.final) for t in got] == [
        ("hello", False), ("hello world", False), ("hello world", False), ("hello world", True)]
    assert vendors.last("listen").query["utterance_end_ms"] == "1000"
    await rec.aclose()


async def test_second_utterance_starts_fresh(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    rec = await stt(vendors, session).open()
    await rec.send(HALF_SECOND)
    await rec.finalize()
    first = await take(rec, 2)
    await rec.send(HALF_SECOND)
    await rec.finalize()
    second = await take(rec, 2)
    assert [t.text for t in first] == [t.text for t in second] == ["hello", "hello"]
    assert second[1].final and second[1].start == pytest.approx(0.5)
    await rec.aclose()


async def test_empty_audio_is_not_sent(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    rec = await stt(vendors, session).open()
    await rec.send(np.zeros(0, dtype=np.int16))  # an empty frame would mean CloseStream
    await rec.send(HALF_SECOND[:160])
    await until(lambda: vendors.audio_bytes == 320)
    await rec.aclose()
    assert [c["type"] for c in vendors.control] == ["CloseStream"]


async def test_keepalive_when_idle_on_injected_clock(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    rec = await stt(vendors, session, clock=clock, keepalive_interval=4.0).open()
    assert isinstance(rec, DeepgramRecognition)
    await clock.advance(3.0)
    await rec.send(HALF_SECOND[:160])  # audio at t=3 resets the idle timer
    await clock.advance(3.5)  # t=6.5: 3.5 s since audio
    await until(lambda: vendors.audio_bytes == 320)
    assert vendors.control == []
    await clock.advance(0.6)  # t=7.1: 4.1 s since audio
    await until(lambda: len(vendors.control) == 1)
    assert vendors.control == [{"type": "KeepAlive"}]
    await clock.advance(4.0)
    await until(lambda: len(vendors.control) == 2)
    assert rec.stats.keepalives == 2
    await rec.aclose()


@pytest.mark.parametrize(
    ("behaviour", "retryable", "text"),
    [(Behaviour.HTTP_401, False, "Invalid credentials"), (Behaviour.HTTP_429, True, "Too many requests"),
     (Behaviour.HTTP_500, True, "internal error")],
)
async def test_refused_handshake(vendors: FakeVendors, session: aiohttp.ClientSession, behaviour: Behaviour,
                                 retryable: bool, text: str) -> None:
    vendors.set("listen", behaviour)
    with pytest.raises(HttpStatusError) as err:
        await stt(vendors, session).open()
    assert err.value.status == behaviour.value
    assert err.value.retryable is retryable
    assert text in str(err.value)


async def test_slow_handshake_misses_connect_deadline(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    vendors.set("listen", Behaviour.SLOW_FIRST_BYTE, delay=5.0)
    with pytest.raises(ProviderTimeout) as err:
        await stt(vendors, session).open(Deadlines(connect=0.2))
    assert err.value.phase == "connect"


Failure = Callable[[Recognition], Awaitable[None]]


@pytest.mark.parametrize(
    ("behaviour", "match"),
    [(Behaviour.DROP, "closed by server|socket error"), (Behaviour.CLOSE_ERROR, "1011 NET-0000"),
     (Behaviour.MALFORMED, "malformed message")],
)
async def test_server_failures_end_results_with_provider_error(
    vendors: FakeVendors, session: aiohttp.ClientSession, behaviour: Behaviour, match: str
) -> None:
    vendors.set("listen", behaviour)
    rec = await stt(vendors, session).open()
    await rec.send(HALF_SECOND)
    with pytest.raises(ProviderError, match=match) as err:
        await take(rec, 1)
    assert err.value.retryable
    with pytest.raises(ProviderError):  # and the recognition stays failed
        await rec.send(HALF_SECOND)
    await rec.aclose()


async def test_stalled_server_is_detected_by_heartbeat(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    vendors.set("listen", Behaviour.STALL)
    rec = await stt(vendors, session, heartbeat=0.2).open()
    await rec.send(HALF_SECOND)
    with pytest.raises(ProviderError):
        await take(rec, 1)
    await rec.aclose()


async def test_unread_interims_are_dropped_oldest_first(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    rec = await stt(vendors, session, results_capacity=2).open()
    assert isinstance(rec, DeepgramRecognition)
    for _ in range(5):
        await rec.send(HALF_SECOND)
    await rec.finalize()
    await until(lambda: rec.stats.results == 6)
    got = await take(rec, 2)
    assert [(t.text, t.final) for t in got] == [("hello world how are you", False),
                                                ("hello world how are you", True)]
    assert rec.stats.dropped_interims == 4
    await rec.aclose()


async def test_unread_finals_fail_the_recognition(vendors: FakeVendors, session: aiohttp.ClientSession) -> None:
    rec = await stt(vendors, session, results_capacity=2).open()
    assert isinstance(rec, DeepgramRecognition)
    for _ in range(3):
        await rec.send(HALF_SECOND)
        await rec.finalize()
    it = rec.results()
    await until(lambda: rec.stats.results >= 4)
    texts = []
    with pytest.raises(ProviderError, match="consumer stalled") as err:
        while True:
            texts.append((await asyncio.wait_for(it.__anext__(), 2.0)).text)
    assert not err.value.retryable
    assert texts == ["hello", "hello"]  # the two finals queued; the third could not be
    await rec.aclose()


async def test_aclose_is_idempotent_and_send_after_close_fails(vendors: FakeVendors,
                                                               session: aiohttp.ClientSession) -> None:
    rec = await stt(vendors, session).open()
    await rec.aclose()
    await rec.aclose()
    with pytest.raises(ProviderError, match="closed"):
        await rec.send(HALF_SECOND)
    assert [c["type"] for c in vendors.control] == ["CloseStream"]
