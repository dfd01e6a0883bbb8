"""The SIP door in the running service, over real sockets, with the echo agent.

A caller on loopback (``uac.Uac``) dials in: the call is admitted, answered
with SDP, its speech comes back from the echo agent, a DTMF digit reaches the
agent, BYE ends the call, and every session and RTP port is released.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from tests.transports.sip.uac import Uac, free_port, speech_8k
from voxline.config import ServiceConfig
from voxline.control.app import DOORS, SESSIONS, STATE, create_app
from voxline.control.runtime import Runtime
from voxline.transports.sip.message import Response
from voxline.transports.sip_door import SipDoor


def config(**kw: Any) -> ServiceConfig:
    base: dict[str, Any] = {"agent": "echo", "vad": "webrtc", "greet": False, "api_tokens": ("t" * 24,),
                            "sip_port": free_port(), "rtp_ports": "31000-31099", "rtp_timeout": 30.0}
    base.update(kw)
    return ServiceConfig(**base)


@pytest.fixture
async def service(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    cfg = config(**getattr(request, "param", {}))
    app = create_app(cfg, Runtime)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    if app[STATE].start_task is not None:
        await app[STATE].start_task
    assert sip_door(app).listening, sip_door(app).error
    try:
        yield app
    finally:
        await server.close()


def sip_door(app: Any) -> SipDoor:
    return next(d.handle for d in app[DOORS] if d.name == "sip")


async def until(pred: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


async def events_of(session: Any, kind: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    sub = session.events.subscribe(replay=True)
    out: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while not out:
                ev = await sub.get(timeout)
                if ev is not None and ev["kind"] == kind:
                    out.append(ev)
    finally:
        sub.close()
    return out


async def test_a_call_is_answered_echoes_speech_takes_dtmf_and_ends_with_bye(service: Any) -> None:
    door = sip_door(service)
    uac = Uac(door.address)
    await uac.start()
    try:
        ok = await uac.call()
        assert ok.status == 200 and [r.status for r in uac.seen] == [100, 180, 200]
        m = uac.answer.media[0]  # type: ignore[union-attr]
        assert m.formats == ["8", "101"] and 31000 <= m.port <= 31099
        (session,) = service[SESSIONS].list()
        assert session.agent_kind == "echo" and session.transport == "sip"
        await until(lambda: session.state.value == "active")
        speech = speech_8k()[:8000 * 2]
        ts = await uac.play(speech)
        await uac.press("1", ts=ts, seq=100 + len(speech) // 160)
        (dtmf,) = await events_of(session, "dtmf")
        assert dtmf["data"]["digit"] == "1"
        await asyncio.sleep(0.3)  # the last echoed frames are on their way
        heard = uac.received_audio()
        assert len(heard) >= 8000  # at least a second of the two came back
        assert np.abs(heard.astype(np.int32)).mean() > 100  # speech, not silence
        assert session.agent.frames > 0
        uac.cseq = 2
        uac.send(uac.request("BYE", branch="bye1"))
        assert (await uac.final("BYE")).status == 200
        await until(lambda: not service[SESSIONS].list() and door.ports.in_use == 0)
        assert session.end_reason == "hangup: BYE"
    finally:
        uac.close()


async def test_ending_the_session_sends_bye_and_releases_the_port(service: Any) -> None:
    door = sip_door(service)
    uac = Uac(door.address)
    await uac.start()
    try:
        assert (await uac.call()).status == 200
        (session,) = service[SESSIONS].list()
        await session.end("api")
        bye = await uac.message()
        while isinstance(bye, Response):
            bye = await uac.message()
        assert bye.method == "BYE" and bye.to.tag == "uac1" and bye.call_id == uac.call_id
        assert door.ports.in_use == 0 and not service[SESSIONS].list()
    finally:
        uac.close()


@pytest.mark.parametrize("service", [{"max_sessions": 1}], indirect=True)
async def test_admission_refusal_is_486_and_no_codec_is_488(service: Any) -> None:
    door = sip_door(service)
    first, second, third = Uac(door.address), Uac(door.address), Uac(door.address)
    for u in (first, second, third):
        await u.start()
    second.call_id, third.call_id = "uac-call-2@127.0.0.1", "uac-call-3@127.0.0.1"
    try:
        assert (await first.call()).status == 200
        busy = await second.call()
        assert busy.status == 486 and door.ports.in_use == 1
        first.cseq = 2
        first.send(first.request("BYE", branch="bye1"))
        await first.final("BYE")
        await until(lambda: not service[SESSIONS].list())
        third.send(third.request("INVITE", branch="inv3", body=third.offer("3", "a=rtpmap:3 GSM/8000\r\n")))
        refused = await third.final()
        assert refused.status == 488 and not service[SESSIONS].list() and door.ports.in_use == 0
    finally:
        for u in (first, second, third):
            u.close()


@pytest.mark.parametrize("service", [{"rtp_timeout": 1.0}], indirect=True)
async def test_a_peer_that_vanishes_without_bye_is_ended_by_rtp_inactivity(service: Any) -> None:
    door = sip_door(service)
    uac = Uac(door.address)
    await uac.start()
    try:
        assert (await uac.call()).status == 200
        await uac.play(speech_8k()[:1600])  # 0.2 s, then silence on the wire
        await until(lambda: not service[SESSIONS].list() and door.ports.in_use == 0)
        msg = await uac.message()
        while isinstance(msg, Response):
            msg = await uac.message()
        assert msg.method == "BYE"
    finally:
        uac.close()


async def test_malformed_and_unknown_requests_are_answered_or_counted(service: Any) -> None:
    door = sip_door(service)
    uac = Uac(door.address)
    await uac.start()
    try:
        uac.send(b"this is not SIP\r\n\r\n")
        bad = uac.request("OPTIONS", branch="o1")
        bad.headers.set("Max-Forwards", "many")
        uac.send(bad)
        resp = await uac.final("OPTIONS")
        assert resp.status == 400 and "Max-Forwards" in resp.reason
        uac.send(uac.request("SUBSCRIBE", branch="s1"))
        assert (await uac.final("SUBSCRIBE")).status == 405
        uac.send(uac.request("OPTIONS", branch="o2"))
        assert (await uac.final("OPTIONS")).status == 200
        assert door.net.counts["malformed"] == 1
    finally:
        uac.close()


@pytest.mark.parametrize("service", [{"sip_allow": ("10.0.0.0/8",)}], indirect=True)
async def test_sources_outside_the_allow_list_get_nothing(service: Any) -> None:
    door = sip_door(service)
    uac = Uac(door.address)
    await uac.start()
    try:
        uac.send(uac.request("OPTIONS", branch="o1"))
        with pytest.raises(TimeoutError):
            await uac.message(timeout=0.5)
        assert door.net.counts["not_allowed"] == 1
    finally:
        uac.close()


async def test_a_sip_port_held_elsewhere_leaves_sip_off_and_the_service_up() -> None:
    import socket

    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    try:
        app = create_app(config(sip_port=holder.getsockname()[1]), Runtime)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        try:
            door = sip_door(app)
            assert not door.listening and "cannot listen" in (door.error or "")
        finally:
            await server.close()
    finally:
        holder.close()


async def test_requests_over_tcp_are_answered_on_their_connection(service: Any) -> None:
    door = sip_door(service)
    reader, writer = await asyncio.open_connection(*door.address)
    try:
        local = writer.get_extra_info("sockname")
        uac = Uac(door.address)
        uac.sip_port = local[1]
        req = uac.request("OPTIONS", branch="tcp1")
        req.headers.set("Via", f"SIP/2.0/TCP 127.0.0.1:{local[1]};branch=z9hG4bKtcp1")
        raw = bytes(req)
        writer.write(raw[:20])  # a stream may cut a message anywhere
        await writer.drain()
        writer.write(raw[20:])
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        assert head.startswith(b"SIP/2.0 200 OK") and b"z9hG4bKtcp1" in head
    finally:
        writer.close()


def test_port_range_codec_preference_allow_list_and_rate_buckets() -> None:
    from voxline.transports.sip_door import media_policy, parse_port_range
    from voxline.transports.sip_net import AllowList, _Buckets

    assert parse_port_range("20000-20999") == (20000, 20999)
    with pytest.raises(ValueError):
        parse_port_range("20000")
    assert [c.name for c in media_policy(("pcma", "G722")).codecs] == ["PCMA", "G722"]
    with pytest.raises(ValueError, match="GSM"):
        media_policy(("GSM",))
    allow = AllowList(("10.0.0.0/8", "::1/128"))
    assert allow.allows("10.1.2.3") and allow.allows("::1") and not allow.allows("127.0.0.1")
    assert not allow.allows("not-an-address") and AllowList().allows("192.0.2.1")
    now = [0.0]
    buckets = _Buckets(rate=1.0, burst=2, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [True, True, False]
    assert buckets.take("b")  # per source
    now[0] = 1.0
    assert buckets.take("a") and not buckets.take("a")
