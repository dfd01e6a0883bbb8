"""A SIP phone: INVITE over UDP with a PCMA offer (the Request-URI's user names
the agent), ACK, RTP both ways in 20 ms packets, BYE to end. Messages are
parsed with the service's own SIP parser and SDP; audio is the service's G.711.
The protocol has no clear: a barge-in shows only as the audio stopping."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt

from voxline.codecs import PCMA
from voxline.transports.rtp.packet import RtpPacket
from voxline.transports.sip.message import Request, Response, parse_message
from voxline.transports.sip.sdp import SessionDescription

from .base import LineError, Listener, Target
from .http import EventFeed, find_session, session_info

__all__ = ["SipLine"]

RATE = 8000
PT = 8  # PCMA
INVITE_TIMEOUT = 10.0


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Any) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.on_datagram(data)


class SipLine:
    name = "sip"
    rate = RATE
    can_impair = True

    def __init__(self, target: Target, agent: str | None, listener: Listener) -> None:
        self.target = target
        self.user = agent or "assistant"
        self.listener = listener
        self.session_id: str | None = None
        host, port = target.extra.get("sip", (target.url.split("://", 1)[-1].split(":", 1)[0], 5060))
        self.server = (str(host), int(port))
        self.call_id = f"{secrets.token_hex(8)}@bench"
        self.tag = secrets.token_hex(4)
        self.to_tag: str | None = None
        self.cseq = 1
        self.ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self._encoder = PCMA.encoder()
        self._decoder = PCMA.decoder()
        self._sip = _Socket(self._on_sip)
        self._rtp = _Socket(self._on_rtp)
        self._responses: asyncio.Queue[Response] = asyncio.Queue(64)
        self._media: tuple[str, int] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._feed: EventFeed | None = None
        self._bye = False

    def _on_sip(self, data: bytes) -> None:
        try:
            msg = parse_message(data)
        except ValueError:
            return
        if isinstance(msg, Response):
            if not self._responses.full():
                self._responses.put_nowait(msg)
        elif isinstance(msg, Request) and msg.method == "BYE":
            self._bye = True
            self._reply_ok(data)
            self.listener.closed("BYE")

    def _reply_ok(self, data: bytes) -> None:
        # 200 OK to the service's BYE: its Via, From, To, Call-ID and CSeq back.
        head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
        keep = [h for h in head[1:] if h.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")]
        out = "\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0"]) + "\r\n\r\n"
        if self._sip.transport is not None:
            self._sip.transport.sendto(out.encode(), self.server)

    def _on_rtp(self, data: bytes) -> None:
        now = time.monotonic()
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            return
        if packet.payload_type == PT:
            self.listener.heard(self._decoder.decode(packet.payload), RATE, now)

    def _request(self, method: str, body: bytes = b"") -> bytes:
        sip_port = self._sip.transport.get_extra_info("sockname")[1] if self._sip.transport else 0
        host, port = self.server
        to = f"<sip:{self.user}@{host}:{port}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        cseq = self.cseq if method != "ACK" else 1
        lines = [f"{method} sip:{self.user}@{host}:{port} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bK{secrets.token_hex(6)};rport",
                 "Max-Forwards: 70", f"From: <sip:bench@127.0.0.1>;tag={self.tag}", f"To: {to}",
                 f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}", f"Contact: <sip:bench@127.0.0.1:{sip_port}>"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self._sip, local_addr=("127.0.0.1", 0))
        await loop.create_datagram_endpoint(lambda: self._rtp, local_addr=("127.0.0.1", 0))
        assert self._sip.transport is not None and self._rtp.transport is not None
        rtp_port = self._rtp.transport.get_extra_info("sockname")[1]
        offer = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                 f"m=audio {rtp_port} RTP/AVP {PT}\r\na=rtpmap:{PT} PCMA/8000\r\na=ptime:20\r\n").encode()
        since = time.time()
        self._sip.transport.sendto(self._request("INVITE", offer), self.server)
        try:
            async with asyncio.timeout(INVITE_TIMEOUT):
                while (resp := await self._responses.get()).status < 200:
                    continue
        except TimeoutError:
            raise LineError(f"no final answer to INVITE within {INVITE_TIMEOUT} s") from None
        if resp.status != 200:
            raise LineError(f"refused: {resp.status} {resp.reason}")
        self.to_tag = resp.to.tag
        answer = SessionDescription.parse(resp.body)
        conn = answer.connection_for(answer.media[0])
        if conn is None:
            raise LineError("the SDP answer has no connection address")
        self._media = (conn.address, answer.media[0].port)
        self._sip.transport.sendto(self._request("ACK"), self.server)
        self._http = aiohttp.ClientSession()
        claimed: set[str] = self.target.extra.setdefault("claimed", set())
        for _ in range(20):
            self.session_id = await find_session(self._http, self.target, "sip", claimed, since)
            if self.session_id is not None:
                break
            await asyncio.sleep(0.05)
        if self.session_id is not None:
            self._feed = EventFeed(self._http, self.target, self.session_id, self.listener)

    async def send(self, pcm: npt.NDArray[np.int16]) -> None:
        if self._rtp.transport is None or self._media is None or self._bye:
            raise LineError("the call is over")
        packet = RtpPacket(PT, self._seq & 0xFFFF, self._ts & 0xFFFFFFFF, self.ssrc, self._encoder.encode(pcm))
        self._seq += 1
        self._ts += len(pcm)
        self._rtp.transport.sendto(bytes(packet), self._media)

    async def info(self) -> dict[str, Any] | None:
        if self._http is None or self.session_id is None:
            return None
        return await session_info(self._http, self.target, self.session_id)

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.close()
        if self._sip.transport is not None and self.to_tag is not None and not self._bye:
            self.cseq += 1
            self._sip.transport.sendto(self._request("BYE"), self.server)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    while (await self._responses.get()).cseq.method != "BYE":
                        continue
        for sock in (self._sip, self._rtp):
            if sock.transport is not None:
                sock.transport.close()
        if self._http is not None:
            await self._http.close()
