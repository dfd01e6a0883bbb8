"""A small SIP caller for tests: real UDP sockets, messages built as a phone would.

It speaks just enough (INVITE, ACK, BYE, CANCEL, OPTIONS; RTP out and in) to
drive the service's SIP door; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import numpy as np

from voxline.codecs import PCMA
from voxline.transports.rtp.dtmf import tone_packets
from voxline.transports.rtp.packet import RtpPacket
from voxline.transports.sip.message import Request, Response, parse_message
from voxline.transports.sip.sdp import SessionDescription

SPEECH = "/usr/share/pocketsphinx/test/data/goforward.raw"  # 16 kHz int16, "go forward ten meters"


def free_port() -> int:
    """A loopback port free for both UDP and TCP now (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


def speech_8k() -> np.ndarray:
    pcm = np.fromfile(SPEECH, dtype="<i2").astype(np.float32)
    return ((pcm[0::2] + pcm[1::2]) / 2).astype(np.int16)  # crude 2:1 decimation is fine for a test


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self, capacity: int = 2000) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(capacity)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if not self.queue.full():
            self.queue.put_nowait((data, (addr[0], addr[1])))


class Uac:
    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sip = _Inbox()
        self.rtp = _Inbox()
        self.sip_port = 0
        self.rtp_port = 0
        self.to_tag: str | None = None
        self.answer: SessionDescription | None = None
        self.call_id = "uac-call-1@127.0.0.1"
        self.cseq = 1
        self.seen: list[Response] = []
        self.route_set: list[str] = []  # from the 200's Record-Route (a proxy in the path)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        t, _ = await loop.create_datagram_endpoint(lambda: self.sip, local_addr=("127.0.0.1", 0))
        self.sip_port = t.get_extra_info("sockname")[1]
        r, _ = await loop.create_datagram_endpoint(lambda: self.rtp, local_addr=("127.0.0.1", 0))
        self.rtp_port = r.get_extra_info("sockname")[1]

    def close(self) -> None:
        for box in (self.sip, self.rtp):
            if box.transport is not None:
                box.transport.close()

    def request(self, method: str, *, branch: str, body: bytes = b"", user: str = "echo",
                cseq: int | None = None, cseq_method: str | None = None) -> Request:
        to = f"<sip:{user}@{self.server[0]}:{self.server[1]}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        lines = [
            f"{method} sip:{user}@{self.server[0]}:{self.server[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.sip_port};branch=z9hG4bK{branch};rport",
            "Max-Forwards: 70", "From: <sip:uac@127.0.0.1>;tag=uac1", f"To: {to}",
            f"Call-ID: {self.call_id}", f"CSeq: {cseq or self.cseq} {cseq_method or method}",
            f"Contact: <sip:uac@127.0.0.1:{self.sip_port}>",
            *(f"Route: {r}" for r in (self.route_set if method != "INVITE" or self.to_tag else ())),
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        assert isinstance(msg, Request)
        return msg

    def send(self, msg: Request | bytes) -> None:
        assert self.sip.transport is not None
        self.sip.transport.sendto(bytes(msg), self.server)

    def offer(self, formats: str = "8 101", maps: str = "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
              ) -> bytes:
        return (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {self.rtp_port} RTP/AVP {formats}\r\n{maps}").encode()

    async def message(self, timeout: float = 5.0) -> Request | Response:
        data, _ = await asyncio.wait_for(self.sip.queue.get(), timeout)
        return parse_message(data)

    async def final(self, method: str = "INVITE", timeout: float = 10.0) -> Response:
        """The next final response to ``method`` (provisionals are kept in ``seen``)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.message(timeout)
                if isinstance(msg, Response) and msg.cseq.method == method:
                    self.seen.append(msg)
                    if msg.status >= 200:
                        return msg

    async def call(self, user: str = "echo") -> Response:
        self.send(self.request("INVITE", branch="inv1", body=self.offer(), user=user))
        resp = await self.final()
        if resp.status == 200:
            self.to_tag = resp.to.tag
            self.route_set = [str(r) for r in reversed(resp.record_routes)]  # §12.1.2
            self.answer = SessionDescription.parse(resp.body)
            self.send(self.request("ACK", branch="ack1", cseq=1, user=user))
        return resp

    @property
    def media_dest(self) -> tuple[str, int]:
        assert self.answer is not None
        return (self.answer.connection.address, self.answer.media[0].port)  # type: ignore[union-attr]

    async def play(self, pcm: np.ndarray, *, pt: int = 8, ssrc: int = 1234, seq: int = 100, ts: int = 1000) -> int:
        """Send ``pcm`` as 20 ms PCMA packets in real time; returns the next timestamp."""
        enc = PCMA.encoder()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert self.rtp.transport is not None
        for k in range(len(pcm) // 160):
            frame = pcm[k * 160:(k + 1) * 160]
            packet = RtpPacket(pt, (seq + k) & 0xFFFF, (ts + 160 * k) & 0xFFFFFFFF, ssrc, enc.encode(frame),
                               marker=k == 0)
            self.rtp.transport.sendto(bytes(packet), self.media_dest)
            await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.02 - loop.time()))
        return ts + 160 * (len(pcm) // 160)

    async def press(self, digit: str, *, ts: int, seq: int, ssrc: int = 1234) -> None:
        assert self.rtp.transport is not None
        for _, p in tone_packets(digit, sequence_number=seq, timestamp=ts, ssrc=ssrc, payload_type=101):
            self.rtp.transport.sendto(bytes(p), self.media_dest)
            await asyncio.sleep(0.02)

    def received_audio(self) -> np.ndarray:
        """Every RTP payload received so far, decoded (PCMA), in arrival order."""
        dec = PCMA.decoder()
        out = []
        while not self.rtp.queue.empty():
            data, _ = self.rtp.queue.get_nowait()
            p = RtpPacket.parse(data)
            if p.payload_type == 8:
                out.append(dec.decode(p.payload))
        return np.concatenate(out) if out else np.zeros(0, np.int16)
