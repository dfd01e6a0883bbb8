"""Calls out through the running service: POST /v1/calls over real sockets, with the echo agent.

A small callee on loopback (``Callee``) takes the INVITE and answers as the
test says (ring, 200 with SDP, 486, a digest challenge, never); voxline's own
SIP door is a callee too. Audio goes both ways, DELETE sends BYE (or CANCEL
while ringing), a refusal ends the session with its status, and every session
and RTP port is released.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from tests.transports.sip.test_door import config, events_of, sip_door, until
from tests.transports.sip.uac import _Inbox, speech_8k
from voxline.codecs import PCMU
from voxline.control.app import SESSIONS, STATE, create_app
from voxline.control.runtime import Runtime
from voxline.transports.rtp.packet import RtpPacket
from voxline.transports.sip.digest import Credentials, answer, parse_challenge
from voxline.transports.sip.message import Request, Response, make_response, parse_message
from voxline.transports.sip.sdp import SessionDescription

TOKEN = "t" * 24


@pytest.fixture
async def service(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, TestServer]]:
    cfg = config(**{"rtp_ports": "31200-31299", **getattr(request, "param", {})})
    app = create_app(cfg, Runtime)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    if app[STATE].start_task is not None:
        await app[STATE].start_task
    assert sip_door(app).listening, sip_door(app).error
    try:
        yield app, server
    finally:
        await server.close()


async def post(server: TestServer, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(server.make_url(path), json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            return r.status, await r.json()


async def delete(server: TestServer, sid: str) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.delete(server.make_url(f"/v1/sessions/{sid}"),
                               headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            return r.status


class Callee:
    """A phone on loopback that answers INVITEs the way a test tells it to."""

    def __init__(self) -> None:
        self.sip, self.rtp = _Inbox(), _Inbox()
        self.port = self.rtp_port = 0
        self.invite: Request | None = None
        self.peer: tuple[str, int] = ("", 0)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        t, _ = await loop.create_datagram_endpoint(lambda: self.sip, local_addr=("127.0.0.1", 0))
        self.port = t.get_extra_info("sockname")[1]
        r, _ = await loop.create_datagram_endpoint(lambda: self.rtp, local_addr=("127.0.0.1", 0))
        self.rtp_port = r.get_extra_info("sockname")[1]

    def close(self) -> None:
        for box in (self.sip, self.rtp):
            if box.transport is not None:
                box.transport.close()

    async def request(self, method: str, timeout: float = 5.0) -> Request:
        async with asyncio.timeout(timeout):
            while True:
                data, self.peer = await self.sip.queue.get()
                msg = parse_message(data)
                if isinstance(msg, Request) and msg.method == method:
                    if method == "INVITE":
                        self.invite = msg
                    return msg

    def send(self, msg: Request | Response) -> None:
        assert self.sip.transport is not None
        self.sip.transport.sendto(bytes(msg), self.peer)

    def reply(self, req: Request, status: int, *, sdp: bool = False, extra: list[tuple[str, str]] = ()) -> Response:
        resp = make_response(req, status, to_tag="callee" if status > 100 else None, extra=list(extra))
        if 100 < status < 300:
            resp.headers.add("Contact", f"<sip:callee@127.0.0.1:{self.port}>")
        if sdp:
            resp.set_body((f"v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                           f"m=audio {self.rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
                           f"a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n").encode(),
                          "application/sdp")
        self.send(resp)
        return resp

    def bye(self, ok: Response) -> Request:
        assert self.invite is not None
        bye = Request(method="BYE", uri=self.invite.contacts[0].uri)
        for name, value in [("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKbye1"), ("Max-Forwards", "70"),
                            ("From", ok.headers.get("To") or ""), ("To", ok.headers.get("From") or ""),
                            ("Call-ID", ok.call_id), ("CSeq", "1 BYE"), ("Content-Length", "0")]:
            bye.headers.add(name, value)
        self.send(bye)
        return bye

    async def play(self, pcm: np.ndarray, media: tuple[str, int]) -> None:
        enc = PCMU.encoder()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert self.rtp.transport is not None
        for k in range(len(pcm) // 160):
            p = RtpPacket(0, 10 + k, 160 * k, 4321, enc.encode(pcm[k * 160:(k + 1) * 160]), marker=k == 0)
            self.rtp.transport.sendto(bytes(p), media)
            await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.02 - loop.time()))

    def heard(self) -> np.ndarray:
        dec = PCMU.decoder()
        out = []
        while not self.rtp.queue.empty():
            p = RtpPacket.parse(self.rtp.queue.get_nowait()[0])
            if p.payload_type == 0:
                out.append(dec.decode(p.payload))
        return np.concatenate(out) if out else np.zeros(0, np.int16)


@pytest.fixture
async def callee() -> AsyncIterator[Callee]:
    c = Callee()
    await c.start()
    try:
        yield c
    finally:
        c.close()


async def event(session: Any, kind: str, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
    """The first event of ``kind`` whose data ``pred`` accepts (history included)."""
    sub = session.events.subscribe(replay=True)
    try:
        async with asyncio.timeout(timeout):
            while True:
                ev = await sub.get(timeout)
                if ev is not None and ev["kind"] == kind and pred(ev["data"]):
                    return ev  # type: ignore[no-any-return]
    finally:
        sub.close()


def session_of(app: Any, sid: str) -> Any:
    return app[SESSIONS].get(sid)


async def released(app: Any) -> None:
    door = sip_door(app)
    await until(lambda: not app[SESSIONS].list() and door.ports.in_use == 0 and not door.outgoing
                and not door.core.calls, 10.0)  # type: ignore[union-attr]


async def test_a_call_out_is_answered_echoes_and_ends_with_bye(service: Any, callee: Callee) -> None:
    app, server = service
    status, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{callee.port}", "agent": "echo"})
    assert status == 201, body
    session = session_of(app, body["session_id"])
    invite = await callee.request("INVITE")
    assert body["sip_call_id"] == invite.call_id and str(invite.uri) == f"sip:bob@127.0.0.1:{callee.port}"
    offer = SessionDescription.parse(invite.body)
    media = (offer.connection.address, offer.media[0].port)  # type: ignore[union-attr]
    assert session.state.value == "created" and session.info(detail=True)["transport_stats"]["sip"] == "calling"
    callee.reply(invite, 100)
    callee.reply(invite, 180)
    (ringing,) = await events_of(session, "sip")
    assert ringing["data"]["state"] == "ringing" and ringing["data"]["status"] == 180
    ok = callee.reply(invite, 200, sdp=True)
    ack = await callee.request("ACK")
    assert ack.cseq.number == 1 and ack.to.tag == "callee"
    await until(lambda: session.state.value == "active")
    await callee.play(speech_8k()[:16000], media)
    await asyncio.sleep(0.3)
    heard = callee.heard()
    assert len(heard) >= 8000 and np.abs(heard.astype(np.int32)).mean() > 100  # the echo of our speech
    stats = session.info(detail=True)["transport_stats"]
    assert stats["codec"] == "PCMU" and stats["jitter_buffer"]["played"] > 50
    assert await delete(server, session.id) == 204
    bye = await callee.request("BYE")
    assert bye.call_id == ok.call_id and bye.cseq.number == 2
    callee.reply(bye, 200)
    await released(app)
    assert session.end_reason == "deleted"


async def test_the_callee_hanging_up_ends_the_session(service: Any, callee: Callee) -> None:
    app, server = service
    _, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{callee.port}"})
    invite = await callee.request("INVITE")
    ok = callee.reply(invite, 200, sdp=True)
    await callee.request("ACK")
    session = session_of(app, body["session_id"])
    await until(lambda: session.state.value == "active")
    callee.bye(ok)
    await released(app)
    assert session.end_reason == "hangup: BYE"


async def test_ending_the_session_while_it_rings_sends_cancel(service: Any, callee: Callee) -> None:
    app, server = service
    _, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{callee.port}"})
    invite = await callee.request("INVITE")
    callee.reply(invite, 180)
    session = session_of(app, body["session_id"])
    await events_of(session, "sip")
    assert await delete(server, body["session_id"]) == 204
    cancel = await callee.request("CANCEL")
    assert cancel.top_via.branch == invite.top_via.branch and cancel.cseq.method == "CANCEL"
    assert sip_door(app).ports.in_use == 0  # the offer's port is free at once
    callee.reply(cancel, 200)
    callee.reply(invite, 487)
    await callee.request("ACK")
    await released(app)
    assert session.end_reason == "deleted"


@pytest.mark.parametrize("status, reason", [(486, "rejected: 486 Busy Here"), (603, "rejected: 603 Decline")])
async def test_a_refusal_ends_the_session_with_its_status(service: Any, callee: Callee, status: int,
                                                          reason: str) -> None:
    app, server = service
    _, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{callee.port}"})
    session = session_of(app, body["session_id"])
    invite = await callee.request("INVITE")
    callee.reply(invite, status)
    await callee.request("ACK")
    await released(app)
    assert session.end_reason == reason


@pytest.mark.parametrize("service", [{"sip_ring_timeout": 1.0}], indirect=True)
async def test_no_answer_within_the_ring_timeout(service: Any, callee: Callee) -> None:
    app, server = service
    _, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{callee.port}"})
    session = session_of(app, body["session_id"])
    invite = await callee.request("INVITE")
    callee.reply(invite, 180)
    cancel = await callee.request("CANCEL", timeout=3.0)
    callee.reply(cancel, 200)
    callee.reply(invite, 487)
    await released(app)
    assert session.end_reason == "no answer"


@pytest.mark.parametrize("service", [{"sip_trunk_user": "alice", "sip_trunk_password": "s3cret",
                                      "sip_trunk_domain": "127.0.0.1"}], indirect=True)
async def test_the_trunk_challenges_and_the_call_goes_through(service: Any, callee: Callee) -> None:
    app, server = service
    status, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{callee.port}", "agent": "echo"})
    assert status == 201
    first = await callee.request("INVITE")
    assert str(first.from_.uri) == "sip:alice@127.0.0.1"
    challenge = 'Digest realm="trunk", nonce="n0nce", qop="auth", algorithm=MD5'
    callee.reply(first, 407, extra=[("Proxy-Authenticate", challenge)])
    await callee.request("ACK")
    second = await callee.request("INVITE")
    value = second.headers.get("Proxy-Authorization") or ""
    cnonce = value.split('cnonce="')[1].split('"')[0]
    assert value == answer(parse_challenge(challenge, proxy=True), Credentials("alice", "s3cret"), "INVITE",
                           str(second.uri), nc=1, cnonce=cnonce)
    callee.reply(second, 200, sdp=True)
    await callee.request("ACK")
    session = session_of(app, body["session_id"])
    await until(lambda: session.state.value == "active")
    await session.end("done")
    callee.reply(await callee.request("BYE"), 200)
    await released(app)


async def test_credentials_are_not_offered_to_a_target_that_is_not_the_trunk(service: Any, callee: Callee) -> None:
    app, server = service
    _, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{callee.port}"})
    session = session_of(app, body["session_id"])
    invite = await callee.request("INVITE")
    callee.reply(invite, 401, extra=[("WWW-Authenticate", 'Digest realm="x", nonce="y"')])
    await released(app)
    assert session.end_reason.startswith("authentication failed")


async def test_voxline_calls_its_own_sip_door(service: Any) -> None:
    app, server = service
    door = sip_door(app)
    status, body = await post(server, "/v1/calls", {"to": f"sip:echo@127.0.0.1:{door.address[1]}"})
    assert status == 201
    await until(lambda: len(app[SESSIONS].list()) == 2 and all(s.state.value == "active"
                                                               for s in app[SESSIONS].list()))
    inbound = next(s for s in app[SESSIONS].list() if s.id != body["session_id"])
    assert inbound.transport == "sip" and inbound.agent_kind == "echo"
    # voxline's UAS takes no REFER: the transfer is refused and the call goes on.
    status, reply = await post(server, f"/v1/sessions/{body['session_id']}/transfer", {"to": "sip:x@127.0.0.1:9"})
    assert status == 202 and reply["state"] == "referring"
    outbound = session_of(app, body["session_id"])
    failed = await event(outbound, "transfer", lambda d: d["state"] == "failed")
    assert failed["data"]["reason"] == "refused: 405 Method Not Allowed" and outbound.state.value == "active"
    assert await delete(server, body["session_id"]) == 204
    await released(app)
    assert inbound.end_reason == "hangup: BYE"


async def test_bad_targets_and_sessions_that_are_not_sip(service: Any) -> None:
    app, server = service
    for to, field in [("sip:", "to"), ("sip:bob@127.0.0.1;transport=sctp", "to"), ("sips:bob@127.0.0.1", "to"),
                      ("sip:bob@nonexistent.invalid", "to")]:
        status, body = await post(server, "/v1/calls", {"to": to})
        assert status == 400 and body["error"]["field"] == field, (to, body)
    status, body = await post(server, "/v1/calls", {"to": "sip:bob@127.0.0.1:9", "from": "not an address"})
    assert status == 400 and body["error"]["field"] == "from"
    status, body = await post(server, "/v1/sessions/0123456789abcdef/transfer", {"to": "sip:x@127.0.0.1"})
    assert status == 404
    assert not app[SESSIONS].list() and sip_door(app).ports.in_use == 0


@pytest.mark.parametrize("service", [{"sip_dial_allow": ("10.0.0.0/8",)}], indirect=True)
async def test_targets_outside_sip_dial_allow_are_refused_before_admission(service: Any, callee: Callee) -> None:
    app, server = service
    status, body = await post(server, "/v1/calls", {"to": f"sip:bob@127.0.0.1:{callee.port}"})
    assert status == 400 and body["error"]["field"] == "to" and "sip_dial_allow" in body["error"]["message"]
    assert app[SESSIONS].admitted == 0 and sip_door(app).ports.in_use == 0
    with pytest.raises(TimeoutError):
        await callee.request("INVITE", timeout=0.3)  # nothing was sent
