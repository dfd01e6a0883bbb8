"""Hostile clients against the real service (``serve`` with the real runtime and the
echo agent) over real sockets: each case is a way one client could hurt the rest.

Every limit is configured small here so a case runs in seconds; the waits below
are deadlines for what must happen, never measurements.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from voxline.config import ServiceConfig
from voxline.control.runtime import Runtime
from voxline.control.serve import serve
from voxline.transports.webrtc_call import EXAMPLE_OFFER

from .api_fixtures import STATIC_TOKEN, Keys, bearer, keys  # noqa: F401  (fixture)

DEADLINE = 20.0  # s: how long something that must happen may take on a loaded machine
MODEL_DEADLINE = 120.0  # s: loading a model, or synthesising with it, on a loaded machine


class EchoRuntime(Runtime):
    agents = ("echo",)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    def __init__(self, config: ServiceConfig, factory: Any = EchoRuntime) -> None:
        self.config = config
        self.factory = factory
        self.url = f"http://127.0.0.1:{config.http_port}"
        self.stop = asyncio.Event()
        self.task: asyncio.Task[int] | None = None
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Service:
        self.task = asyncio.create_task(serve(self.config, self.factory, self.stop))
        self.http = aiohttp.ClientSession()
        async with asyncio.timeout(MODEL_DEADLINE):
            while True:
                assert not self.task.done(), "serve exited"
                with contextlib.suppress(aiohttp.ClientError):
                    async with self.http.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return self
                await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        assert self.http is not None and self.task is not None
        await self.http.close()
        self.stop.set()
        assert await asyncio.wait_for(self.task, DEADLINE) == 0

    async def metric(self, name: str) -> float:
        assert self.http is not None
        async with self.http.get(self.url + "/metrics", headers=bearer(STATIC_TOKEN)) as resp:
            text = await resp.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def healthy(self) -> bool:
        assert self.http is not None
        async with self.http.get(self.url + "/healthz") as resp:
            return resp.status == 200

    async def offer(self, token: str, sdp: str = EXAMPLE_OFFER) -> tuple[int, dict[str, Any]]:
        assert self.http is not None
        body = {"sdp": sdp, "type": "offer"}
        async with self.http.post(self.url + "/v1/webrtc/offer", json=body, headers=bearer(token)) as resp:
            return resp.status, await resp.json()


def _config(**kw: Any) -> ServiceConfig:
    base: dict[str, Any] = dict(http_port=_free_port(), agent="echo", vad="webrtc", api_tokens=(STATIC_TOKEN,),
                                ice_hosts=("127.0.0.1",), drain_timeout=0.5, log_format="text")
    base.update(kw)
    return ServiceConfig(**base)


@pytest.fixture
async def errors(caplog: pytest.LogCaptureFixture) -> AsyncIterator[list[logging.LogRecord]]:
    """Every ERROR (or worse) logged while the test runs: a hostile client must cause none."""
    caplog.set_level(logging.WARNING)
    found: list[logging.LogRecord] = []
    yield found
    found.extend(r for r in caplog.records if r.levelno >= logging.ERROR)


async def _open(port: int, data: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if data:
        writer.write(data)
        await writer.drain()
    return reader, writer


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Read until the server closes; what it sent (a deadline, not a measurement)."""
    out = b""
    async with asyncio.timeout(DEADLINE):
        while chunk := await reader.read(4096):
            out += chunk
    return out


async def test_idle_and_slowloris_connections_are_closed_and_the_service_stays_up() -> None:
    config = _config(http_idle_timeout=1.0)
    async with Service(config) as svc:
        idle = [await _open(config.http_port) for _ in range(100)]
        slow = [await _open(config.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(100)]

        async def trickle(writer: asyncio.StreamWriter) -> None:
            # A header byte at a time, never finishing the head: slowloris.
            with contextlib.suppress(ConnectionError):
                for _ in range(200):
                    writer.write(b"X")
                    await writer.drain()
                    await asyncio.sleep(0.2)

        trickles = [asyncio.create_task(trickle(w)) for _, w in slow]
        try:
            assert await svc.healthy()  # served while 200 connections sit on it
            for reader, _ in idle + slow:
                await _closed_by_server(reader)
        finally:
            for t in trickles:
                t.cancel()
            for _, writer in idle + slow:
                writer.close()
        assert await svc.healthy()


async def test_past_the_connection_cap_a_clear_503_then_room_again() -> None:
    config = _config(max_connections=20, http_idle_timeout=30.0)
    async with Service(config) as svc:
        assert svc.http is not None
        await svc.http.close()  # its pooled connection would count against the cap
        held = [await _open(config.http_port) for _ in range(20)]
        reader, writer = await _open(config.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = await _closed_by_server(reader)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in reply and b"too_many_connections" in reply
        for _, w in held:
            w.close()
        svc.http = aiohttp.ClientSession()
        async with asyncio.timeout(DEADLINE):
            while True:  # the held connections close; the listener takes requests again
                with contextlib.suppress(aiohttp.ClientError):
                    if await svc.healthy():
                        break
                await asyncio.sleep(0.05)
        assert await svc.metric("voxline_http_connections_refused_total") >= 1


async def test_a_body_that_never_arrives_is_408_and_a_client_that_leaves_is_not_a_500(
    errors: list[logging.LogRecord],
) -> None:
    config = _config(http_body_timeout=1.0)
    async with Service(config) as svc:
        head = (b"POST /v1/webrtc/offer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + STATIC_TOKEN.encode() + b"\r\nContent-Length: 500\r\n\r\n")
        reader, writer = await _open(config.http_port, head + b'{"sdp": ')
        reply = await _closed_by_server(reader)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 408") and b"body_timeout" in reply
        for _ in range(5):  # the client goes away mid-body
            reader, writer = await _open(config.http_port, head + b'{"sdp"')
            await asyncio.sleep(0.1)
            writer.transport.abort()
        await asyncio.sleep(0.5)
        assert await svc.metric('voxline_http_requests_total{route="/v1/webrtc/offer",method="POST",status="500"}') == 0
        assert await svc.healthy()
    assert not errors, [r.getMessage() for r in errors]


async def test_malformed_requests_are_400_counted_and_not_logged(errors: list[logging.LogRecord]) -> None:
    config = _config()
    async with Service(config) as svc:
        garbage = [
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: \x00\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\n\r\n",
            b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        ] * 4
        for data in garbage:
            reader, writer = await _open(config.http_port, data)
            reply = await _closed_by_server(reader)
            writer.close()
            assert reply.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), reply[:100]
        assert await svc.metric("voxline_http_malformed_requests_total") >= len(garbage) - 4
        assert await svc.healthy()
    assert not errors, [r.getMessage() for r in errors]


async def test_an_unauthenticated_request_gets_its_401_and_loses_its_connection() -> None:
    config = _config()
    async with Service(config) as svc:
        reader, writer = await _open(config.http_port, b"GET /v1/sessions HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = await _closed_by_server(reader)  # keep-alive asked (HTTP/1.1), closed anyway
        writer.close()
        assert reply.startswith(b"HTTP/1.1 401")
        assert await svc.healthy()


async def test_one_token_cannot_hold_every_slot_and_pending_sessions_time_out(keys: Keys) -> None:
    config = _config(jwt_public_key=keys.public_pem, max_sessions=8, max_sessions_per_token=6,
                     max_pending_per_token=3, pending_timeout=1.0, sessions_per_minute=600, session_burst=100)
    mallory, alice = keys.token(tenant="evil", sub="mallory"), keys.token(tenant="acme", sub="alice")
    async with Service(config) as svc:
        # Offers that never complete ICE: each is pending until pending_timeout.
        results = [await svc.offer(mallory) for _ in range(5)]
        assert [s for s, _ in results] == [201, 201, 201, 429, 429]
        assert results[3][1]["error"]["code"] == "pending_limit"
        assert (await svc.offer(alice))[0] == 201  # another tenant still gets in
        async with asyncio.timeout(DEADLINE):  # the pending ones end, and free their slots
            while await svc.metric('voxline_sessions_ended_total{reason="connect timeout"}') < 4:
                await asyncio.sleep(0.1)
        assert (await svc.offer(mallory))[0] == 201


async def test_a_refused_offer_is_counted_as_refused_not_as_transport_closed(errors: list[logging.LogRecord]) -> None:
    config = _config()
    # Well-formed enough to pass the structural checks; aiortc cannot parse its m-line.
    bad = EXAMPLE_OFFER.replace("m=audio 9 UDP/TLS/RTP/SAVPF 96 9 0 8", "m=audio x")
    async with Service(config) as svc:
        for _ in range(3):
            status, body = await svc.offer(STATIC_TOKEN, bad)
            assert status == 400 and body["error"]["code"] == "invalid_sdp"
        assert await svc.metric('voxline_sessions_ended_total{reason="bad offer"}') == 3
        assert await svc.metric('voxline_sessions_ended_total{reason="transport closed"}') == 0
    assert not errors, [r.getMessage() for r in errors]


async def test_no_task_exception_goes_unretrieved(errors: list[logging.LogRecord]) -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: unhandled.append(ctx))
    try:
        config = _config()
        async with Service(config) as svc:
            assert svc.http is not None
            no_fingerprint = "".join(line + "\r\n" for line in EXAMPLE_OFFER.splitlines()
                                     if not line.startswith("a=fingerprint"))
            status, body = await svc.offer(STATIC_TOKEN, no_fingerprint)
            assert status == 400 and "fingerprint" in body["error"]["message"]
            for _ in range(3):  # deleted while it is connecting
                status, created = await svc.offer(STATIC_TOKEN)
                assert status == 201
                async with svc.http.delete(f"{svc.url}/v1/sessions/{created['session_id']}",
                                           headers=bearer(STATIC_TOKEN)) as resp:
                    assert resp.status == 204
            await asyncio.sleep(0.5)
        gc.collect()  # "Task exception was never retrieved" is reported when a task is collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert not unhandled, [str(c.get("message")) + repr(c.get("exception")) for c in unhandled]
    assert not errors, [r.getMessage() for r in errors]


class Recording:
    """A TTS that notes each text it is asked to synthesise (here: real Piper)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def synthesize(self, text: str, deadlines: Any = None) -> Any:
        self.texts.append(text)
        return self.inner.synthesize(text, deadlines)


async def test_a_long_say_is_voiced_in_bounded_pieces_and_interrupt_stops_them() -> None:
    from voxline.media.clock import LoopClock
    from voxline.providers.chunked import ChunkedTTS
    from voxline.providers.factory import Providers
    from voxline.providers.tts.espeak import EspeakTTS
    from voxline.providers.tts.piper import PiperConfig, PiperTTS

    from ..agent.fakes import FakeLLM, FakeSTT
    from ..transports.probe import SignalTrack, probe_signal
    from ..transports.test_webrtc import loopback_client

    piper = Recording(PiperTTS(PiperConfig()))

    class SayRuntime(Runtime):
        agents = ("assistant",)

        def __init__(self, config: ServiceConfig, registry: Any, observer: Any = None) -> None:
            clock = LoopClock()
            providers = Providers(FakeSTT(clock), FakeLLM(clock, "fine"), ChunkedTTS(piper, 250),  # type: ignore[arg-type]
                                  ChunkedTTS(EspeakTTS(), 250))
            super().__init__(config, registry, observer, providers=providers)

    config = _config(agent="assistant", greet=False)
    words = "the quick brown fox jumps over the lazy dog and then it runs away, far into the hills "
    text = (words * 60)[:4096]
    async with Service(config, SayRuntime) as svc:
        assert svc.http is not None
        client = await loopback_client(SignalTrack(probe_signal(48000) * 0))  # a silent caller
        try:
            status, created = await svc.offer(STATIC_TOKEN, client.localDescription.sdp)
            assert status == 201
            sid = created["session_id"]
            from aiortc import RTCSessionDescription

            await client.setRemoteDescription(RTCSessionDescription(created["sdp"], "answer"))
            async with asyncio.timeout(DEADLINE):
                while True:
                    async with svc.http.get(f"{svc.url}/v1/sessions/{sid}", headers=bearer(STATIC_TOKEN)) as r:
                        if (await r.json())["state"] == "active":
                            break
                    await asyncio.sleep(0.1)
            async with svc.http.post(f"{svc.url}/v1/sessions/{sid}/say", json={"text": text},
                                     headers=bearer(STATIC_TOKEN)) as r:
                assert r.status == 202
            async with asyncio.timeout(MODEL_DEADLINE):
                while len(piper.texts) < 2:
                    await asyncio.sleep(0.05)
            async with svc.http.post(f"{svc.url}/v1/sessions/{sid}/interrupt", headers=bearer(STATIC_TOKEN)) as r:
                assert r.status == 202
            await asyncio.sleep(0.5)  # the cancel reaches the TTS task (a piece already asked for may start)
            started = len(piper.texts)
            await asyncio.sleep(3.0)  # a piece would start well within this if synthesis went on
            assert len(piper.texts) == started, "synthesis went on after the interrupt"
        finally:
            await client.close()
    assert started < len(text) // 250  # far from all of it was synthesised
    assert all(0 < len(piece) <= 250 for piece in piper.texts)
    assert " ".join(piper.texts).split() == text.split()[: len(" ".join(piper.texts).split())]


async def test_an_events_client_that_vanishes_is_not_an_error(errors: list[logging.LogRecord]) -> None:
    config = _config()
    async with Service(config) as svc:
        assert svc.http is not None
        status, created = await svc.offer(STATIC_TOKEN)
        assert status == 201
        sid = created["session_id"]
        for _ in range(3):
            ws = await svc.http.ws_connect(f"{svc.url}/v1/sessions/{sid}/events", protocols=("voxline.v1",),
                                           headers=bearer(STATIC_TOKEN))
            await ws.receive(timeout=DEADLINE)  # the history: the stream is live
            transport = ws._response.connection.transport  # type: ignore[union-attr]
            assert transport is not None
            transport.abort()  # gone without a close frame
        async with svc.http.delete(f"{svc.url}/v1/sessions/{sid}", headers=bearer(STATIC_TOKEN)) as resp:
            assert resp.status == 204  # its events go to clients that are no longer there
        await asyncio.sleep(0.5)
        assert await svc.healthy()
    assert not errors, [r.getMessage() for r in errors]
