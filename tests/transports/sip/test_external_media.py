"""Asterisk ARI external media in the running service, over real UDP.

The test plays Asterisk's part as its externalMedia channel does: it asks for a
port (``POST /v1/sessions/rtp``), sends the caller's audio there as RTP every
20 ms from its own port, and plays what comes back to that port. The echo
agent's audio must come back to the address Asterisk sent from, in the format
asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.transports.sip.uac import free_port, speech_8k
from voxline.codecs import PCMU, l16
from voxline.config import ServiceConfig
from voxline.control.app import DOORS, SESSIONS, STATE, create_app
from voxline.control.runtime import Runtime
from voxline.transports.rtp.packet import RtpPacket

TOKEN = "t" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Asterisk(asyncio.DatagramProtocol):
    """One externalMedia channel's RTP socket."""

    def __init__(self) -> None:
        self.got: list[tuple[RtpPacket, tuple[str, int]]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if len(self.got) < 5000:
            self.got.append((RtpPacket.parse(data), (addr[0], addr[1])))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    async def play(self, payloads: list[bytes], dest: tuple[str, int], *, pt: int, samples: int) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert self.transport is not None
        for k, payload in enumerate(payloads):
            self.transport.sendto(bytes(RtpPacket(pt, (500 + k) & 0xFFFF, 7000 + samples * k, 0xA5A5, payload,
                                                  marker=k == 0)), dest)
            await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.02 - loop.time()))


async def channel() -> Asterisk:
    _, proto = await asyncio.get_running_loop().create_datagram_endpoint(Asterisk, local_addr=("127.0.0.1", 0))
    return proto


def config(**kw: Any) -> ServiceConfig:
    base: dict[str, Any] = {"agent": "echo", "vad": "webrtc", "greet": False, "api_tokens": (TOKEN,),
                            "sip_port": free_port(), "rtp_ports": "33000-33019", "rtp_timeout": 30.0,
                            "audiosocket_port": -1}
    base.update(kw)
    return ServiceConfig(**base)


@pytest.fixture
async def client(request: pytest.FixtureRequest) -> AsyncIterator[TestClient]:
    app = create_app(config(**getattr(request, "param", {})), Runtime)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        if app[STATE].start_task is not None:
            await app[STATE].start_task
        yield c


def door(client: TestClient) -> Any:
    return next(d.handle for d in client.app[DOORS] if d.name == "rtp")


async def until(pred: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


async def reserve(client: TestClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/sessions/rtp", json=body, headers=AUTH)
    assert r.status == 201, await r.text()
    assert r.headers["Location"].endswith((await r.json())["session_id"])
    return dict(await r.json())


async def test_ulaw_audio_is_echoed_back_to_where_asterisk_sends_from(client: TestClient) -> None:
    got = await reserve(client, format="ulaw", agent="echo")
    assert got["format"] == "ulaw" and got["payload_type"] == 0
    assert got["external_host"] == f"127.0.0.1:{got['port']}" and 33000 <= got["port"] <= 33019
    (session,) = client.app[SESSIONS].list()
    assert session.transport == "rtp" and session.state.value != "active"  # nothing heard yet
    ast = await channel()
    try:
        speech = speech_8k()[:8000 * 2]
        enc = PCMU.encoder()
        frames = [enc.encode(speech[k:k + 160]) for k in range(0, len(speech) - 159, 160)]
        await ast.play(frames, ("127.0.0.1", got["port"]), pt=0, samples=160)
        await until(lambda: len(ast.got) >= 80)
        assert session.state.value == "active"
        assert {addr for _, addr in ast.got} == {("127.0.0.1", got["port"])}  # symmetric: from the port we gave
        assert {p.payload_type for p, _ in ast.got} == {0} and len({p.ssrc for p, _ in ast.got}) == 1
        dec = PCMU.decoder()
        heard = np.concatenate([dec.decode(p.payload) for p, _ in ast.got])
        assert np.abs(heard.astype(np.int32)).mean() > 100  # speech, not silence
        stats = session.endpoint.stats()
        assert stats["jitter_buffer"]["played"] >= 90 and stats["wrong_source"] == 0
        r = await client.delete(f"/v1/sessions/{session.id}", headers=AUTH)
        assert r.status in (200, 202, 204)
        await until(lambda: not client.app[SESSIONS].list() and door(client).ports.in_use == 0)
    finally:
        assert ast.transport is not None
        ast.transport.close()


async def test_slin16_is_big_endian_l16_at_16_khz_with_asterisks_payload_type(client: TestClient) -> None:
    got = await reserve(client, format="slin16")
    assert got["payload_type"] == 118
    ast = await channel()
    try:
        pcm = np.repeat(speech_8k()[:8000 * 2], 2)  # 16 kHz
        frames = [pcm[k:k + 320].astype(">i2").tobytes() for k in range(0, len(pcm) - 319, 320)]
        await ast.play(frames, ("127.0.0.1", got["port"]), pt=118, samples=320)
        await until(lambda: len(ast.got) >= 80)
        assert {p.payload_type for p, _ in ast.got} == {118}
        assert {len(p.payload) for p, _ in ast.got} == {640}  # 20 ms of 16 kHz 16-bit
        heard = np.concatenate([l16(16000).decoder().decode(p.payload) for p, _ in ast.got])
        assert np.abs(heard.astype(np.int32)).mean() > 100
    finally:
        assert ast.transport is not None
        ast.transport.close()


async def test_once_asterisk_is_heard_packets_from_elsewhere_are_dropped(client: TestClient) -> None:
    got = await reserve(client, format="ulaw")
    (session,) = client.app[SESSIONS].list()
    ast, intruder = await channel(), await channel()
    try:
        dest = ("127.0.0.1", got["port"])
        silence = [PCMU.encoder().encode(np.zeros(160, np.int16))] * 10
        await ast.play(silence, dest, pt=0, samples=160)
        await intruder.play(silence, dest, pt=0, samples=160)
        await until(lambda: session.endpoint.stats()["wrong_source"] >= 10)
        assert not intruder.got  # nothing is sent to the intruder
    finally:
        for c in (ast, intruder):
            assert c.transport is not None
            c.transport.close()


@pytest.mark.parametrize("client", [{"rtp_timeout": 0.5}], indirect=True)
async def test_asterisk_falling_silent_ends_the_session_and_frees_the_port(client: TestClient) -> None:
    got = await reserve(client, format="alaw")
    (session,) = client.app[SESSIONS].list()
    ast = await channel()
    try:
        await ast.play([b"\xd5" * 160] * 5, ("127.0.0.1", got["port"]), pt=8, samples=160)
        await until(lambda: session.state.value == "ended")
        assert session.end_reason == "peer gone: RTP inactivity"
        await until(lambda: door(client).ports.in_use == 0)
    finally:
        assert ast.transport is not None
        ast.transport.close()


@pytest.mark.parametrize("client", [{"pending_timeout": 0.5}], indirect=True)
async def test_a_port_nobody_sends_to_is_given_back_at_the_pending_timeout(client: TestClient) -> None:
    await reserve(client, format="ulaw")
    (session,) = client.app[SESSIONS].list()
    await until(lambda: session.state.value == "ended")
    assert session.end_reason == "connect timeout"
    await until(lambda: door(client).ports.in_use == 0)


@pytest.mark.parametrize("body, field", [
    ({"format": "g729"}, None),
    ({"format": "ulaw", "remote": "asterisk.example:4000"}, "remote"),
    ({"format": "ulaw", "remote": "127.0.0.1:0"}, "remote"),
    ({"format": "ulaw", "remote": "127.0.0.1"}, "remote"),
    ({"format": "ulaw", "payload_type": 200}, "payload_type"),
    ({"format": "ulaw", "payload_type": -1}, "payload_type"),
])
async def test_bad_requests_are_400_and_take_no_port(client: TestClient, body: dict[str, Any],
                                                      field: str | None) -> None:
    r = await client.post("/v1/sessions/rtp", json=body, headers=AUTH)
    assert r.status == 400, await r.text()
    if field is not None:
        assert (await r.json())["error"]["field"] == field
    assert not client.app[SESSIONS].list() and door(client).ports.in_use == 0


@pytest.mark.parametrize("client", [{"rtp_ports": "33100-33103"}], indirect=True)  # two port pairs
async def test_when_every_port_is_taken_the_answer_is_503(client: TestClient) -> None:
    await reserve(client, format="ulaw")
    await reserve(client, format="ulaw")
    r = await client.post("/v1/sessions/rtp", json={"format": "ulaw"}, headers=AUTH)
    assert r.status == 503 and "Retry-After" in r.headers
    assert len(client.app[SESSIONS].list()) == 2  # the refused one left nothing behind


async def test_the_port_comes_from_the_pool_the_sip_door_uses(client: TestClient) -> None:
    sip = next(d.handle for d in client.app[DOORS] if d.name == "sip")
    assert sip.ports is door(client).ports
    got = await reserve(client, format="ulaw")
    assert sip.ports.in_use == 1 and got["port"] in range(sip.ports.first, sip.ports.last + 1)
