"""W3 over SIP and RTP: N echo calls per core through the service's SIP door.

A real ``voxline serve`` (echo agent, no greeting, webrtcvad or Silero, SIP on a
free port over UDP, RTP ports 30000-39999) runs in its own process pinned to
``--cpu``; this process, pinned to the other core, is a minimal SIP UAC on
asyncio UDP placing N calls the way a trunk would (one signalling socket, one
RTP socket per call):

    INVITE sip:echo@… (SDP offer: PCMU/8000 and telephone-event) -> 100/180 ->
    200 (SDP answer: the service's RTP address) -> ACK -> RTP out: one PCMU
    packet of 20 ms per frame from the W2 clip, W2's schedule -> the echo back
    as RTP -> BYE -> 200

Frames and measures as in W2 (see ``benchmarks/calls.py``): call i starts at
clip frame (37·i) mod 600, its phase spread over the period, frames 100-599
measured, then up to 2 s of drain.

Latency, per echoed packet j of a call: its arrival − the moment the caller sent
its packet j, minus the depth of the service's RTP jitter buffer (adaptive,
20-200 ms, 60 ms at the start) in effect when that packet arrived: the pipeline
declares the depth as that stage's latency, and each call's session logs when it
changed (``jitter_buffer.depths``; service and callers share this machine's
monotonic clock). ``declared_ms`` is the median of what was subtracted;
``raw_p99_ms`` is the whole send-to-echo time. Holds at N iff
p99 of that ≤ 20 ms, every packet sent in the window was echoed (none missing
after the drain), at least 99% of the nominal 50·N packets/s were sent, every
call was answered 200 and its BYE answered, and every session was released.
Beside it, from the service's own counters over whole calls (warm-up included),
``rtp_not_played``: packets its jitter buffers did not play as audio (skipped
to shrink the depth, or replaced by concealment, ``rtp_jitter.concealed``); such
a packet is still echoed as *a* frame, so the echoed count cannot show it.

    python -m benchmarks.sip_calls --calls N --cpu 0
    python -m benchmarks.sip_calls --ladder --cpu 0

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import struct
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import numpy as np

from voxline.transports.sip.message import Request, Response, parse_message
from voxline.transports.sip.sdp import SessionDescription

from .calls import Call, Service, add_call_args, main_for, measure
from .media_path import FRAME_S, FRAMES
from .common import new_parser

PCMU_PT = 0
RTP_HEADER = struct.Struct("!BBHII")
SIP_TIMEOUT = 10.0  # s for a final response
T1 = 0.5  # s, RFC 3261's first retransmission interval over UDP


class SipTrunk(asyncio.DatagramProtocol):
    """One UDP socket for every call's signalling; responses routed by Call-ID."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.calls: dict[str, "SipCall"] = {}
        self.port = 0
        self.unparsed = 0
        self.requests: dict[str, int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            msg = parse_message(data)
        except Exception:
            self.unparsed += 1
            return
        try:
            call = self.calls.get(msg.call_id)
        except Exception:
            call = None
        if call is None:
            return
        if isinstance(msg, Response):
            call.on_response(msg)
        elif isinstance(msg, Request):
            self.requests[msg.method] = self.requests.get(msg.method, 0) + 1
            call.on_request(msg, data, (addr[0], addr[1]))

    def sendto(self, data: bytes, dest: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, dest)


def _header(data: bytes, name: bytes) -> str:
    m = re.search(rb"(?im)^" + re.escape(name) + rb"\s*:\s*(.+?)\r?$", data)
    return m.group(1).decode(errors="replace").strip() if m else ""


class RtpSocket(asyncio.DatagramProtocol):
    def __init__(self, call: "SipCall") -> None:
        self.call = call
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if len(data) >= 12 and data[1] & 0x7F == PCMU_PT and data[0] >> 6 == 2:
            self.call.got_at.append(time.monotonic())
        # RTCP (the odd port: never bound here) and events are not audio


class SipCall(Call):
    trunk: SipTrunk

    def __init__(self, i: int, n: int, t0: float, clip: Sequence[bytes], service: Service) -> None:
        super().__init__(i, n, t0, clip)
        self.server = ("127.0.0.1", service.sip_port)
        self.call_id = f"w3-{i}-{random.getrandbits(48):012x}@127.0.0.1"
        self.tag = f"uac{i}"
        self.to_tag = ""
        self.cseq = 1
        self.rtp: RtpSocket | None = None
        self.rtp_port = 0
        self.dest: tuple[str, int] | None = None
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.final: dict[str, asyncio.Future[Response]] = {}
        self.statuses: list[int] = []
        self.bye_status: int | None = None
        self.remote_target = f"sip:echo@{self.server[0]}:{self.server[1]}"

    def _request(self, method: str, cseq: int, branch: str, body: bytes = b"") -> bytes:
        to = f"<sip:echo@{self.server[0]}:{self.server[1]}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        uri = self.remote_target if method != "INVITE" else f"sip:echo@{self.server[0]}:{self.server[1]}"
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.trunk.port};branch=z9hG4bK{branch};rport",
            "Max-Forwards: 70", f"From: <sip:caller{self.i}@127.0.0.1>;tag={self.tag}", f"To: {to}",
            f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method if method != 'ACK' else 'ACK'}",
            f"Contact: <sip:caller{self.i}@127.0.0.1:{self.trunk.port}>", "User-Agent: voxline-w3",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def _transact(self, method: str, data: bytes, branch: str) -> Response:
        """Send until a final response (retransmitting as RFC 3261 17.1.1.2 over UDP)."""
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.final[branch] = fut
        interval = T1
        deadline = time.monotonic() + SIP_TIMEOUT
        provisional = False
        while True:
            if not provisional:
                self.trunk.sendto(data, self.server)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), min(interval, deadline - time.monotonic()))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no final response to {method} within {SIP_TIMEOUT} s") from None
                provisional = method == "INVITE" and branch in self._provisional
                interval = min(interval * 2, 4.0)

    _provisional: set[str] = set()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        rtp = RtpSocket(self)
        await loop.create_datagram_endpoint(lambda: rtp, local_addr=("127.0.0.1", 0))
        assert rtp.transport is not None
        self.rtp = rtp
        self.rtp_port = rtp.transport.get_extra_info("sockname")[1]
        self.trunk.calls[self.call_id] = self
        sdp = (f"v=0\r\no=- {self.i} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {self.rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
               f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n").encode()
        branch = f"inv{self.i}x{random.getrandbits(32):08x}"
        resp = await self._transact("INVITE", self._request("INVITE", 1, branch, sdp), branch)
        if resp.status != 200:
            raise ConnectionError(f"INVITE answered {resp.status} {resp.reason}")
        self.to_tag = resp.to.tag or ""
        if resp.contacts:
            self.remote_target = str(resp.contacts[0].uri)
        answer = SessionDescription.parse(resp.body)
        media = answer.media[0]
        conn = media.connection or answer.connection
        assert conn is not None
        if media.port == 0 or PCMU_PT not in [int(f) for f in media.formats if f.isdigit()]:
            raise ConnectionError(f"the answer has no PCMU: {media.formats}")
        self.dest = (conn.address, media.port)
        self.trunk.sendto(self._request("ACK", 1, f"ack{self.i}x{random.getrandbits(32):08x}"), self.server)

    def on_response(self, resp: Response) -> None:
        branch = (resp.top_via.branch or "").removeprefix("z9hG4bK")
        self.statuses.append(resp.status)
        if resp.status < 200:
            self._provisional.add(branch)
            return
        fut = self.final.get(branch)
        if fut is not None and not fut.done():
            fut.set_result(resp)
        elif resp.cseq.method == "INVITE" and resp.status == 200 and self.to_tag:
            # a retransmitted 200: our ACK was lost; ACK again
            self.trunk.sendto(self._request("ACK", 1, f"ack{self.i}r{random.getrandbits(32):08x}"), self.server)

    def on_request(self, req: Request, data: bytes, addr: tuple[str, int]) -> None:
        """A BYE from the service (the call ended on its side): answer 200, count it as a failure."""
        lines = ["SIP/2.0 200 OK"]
        for name in (b"Via", b"From", b"To", b"Call-ID", b"CSeq"):
            for m in re.finditer(rb"(?im)^" + name + rb"\s*:\s*(.+?)\r?$", data):
                lines.append(f"{name.decode()}: {m.group(1).decode(errors='replace').strip()}")
        lines.append("Content-Length: 0")
        self.trunk.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)
        if req.method == "BYE" and not self.done and self.failed is None:
            self.failed = "BYE from the service"

    def write(self, k: int, frame: bytes) -> None:
        assert self.rtp is not None and self.rtp.transport is not None and self.dest is not None
        head = RTP_HEADER.pack(0x80, (0x80 if k == 0 else 0) | PCMU_PT, (self.seq + k) & 0xFFFF,
                               (self.ts + 160 * k) & 0xFFFFFFFF, self.ssrc)
        self.rtp.transport.sendto(head + frame, self.dest)

    async def hangup(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            if self.dest is not None and self.failed is None:
                self.cseq += 1
                branch = f"bye{self.i}x{random.getrandbits(32):08x}"
                resp = await self._transact("BYE", self._request("BYE", self.cseq, branch), branch)
                self.bye_status = resp.status
        finally:
            if self.rtp is not None and self.rtp.transport is not None:
                self.rtp.transport.close()


def depth_at_frames(call: Call, details: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """From the call's session's log of jitter-depth changes: the depth (ms) in
    effect when each of its packets arrived, and for each echoed packet how many
    packets the service had discarded before it (to shrink its depth), so echo j
    is matched to packet j + shift[j]. None if the session is not found.

    A discard happens at the instant the buffer pops the packet before it; that
    packet's echo is the first to arrive after that instant (exact while at most
    one frame is in flight through the service, i.e. while latency is under a
    frame; past that the call fails the 20 ms criterion anyway)."""
    dest = getattr(call, "dest", None)
    if dest is None:
        return None
    for d in details:
        ts = d.get("transport_stats") or {}
        if ts.get("local_port") != dest[1]:
            continue
        log = (ts.get("jitter_buffer") or {}).get("depths") or []
        if not log:
            return None
        times = np.array([float(t) for t, _ in log])
        depths = np.array([float(x) for _, x in log])
        sent = np.asarray(call.sent_at, dtype=float)
        idx = np.searchsorted(times, np.nan_to_num(sent, nan=times[0]), side="right") - 1
        declared = depths[np.clip(idx, 0, len(depths) - 1)] * 1000
        got = np.asarray(call.got_at, dtype=float)
        shift = np.zeros(len(got), dtype=int)
        for t, before, after in zip(times[1:], depths[:-1], depths[1:]):
            if abs((before - after) - FRAME_S) < 1e-6:  # one frame discarded at t
                j = int(np.searchsorted(got, t, side="right"))  # the echo of the packet popped at t
                shift[j + 1:] += 1
        return declared, shift
    return None


def jitter_depth_ms(details: list[dict[str, Any]]) -> float:
    depths = [float(((d.get("transport_stats") or {}).get("jitter_buffer") or {}).get("depth", np.nan))
              for d in details]
    depths = [x for x in depths if x == x]
    return 1000.0 * float(np.median(depths)) if depths else 0.0


async def run_calls(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    trunk = SipTrunk()
    await loop.create_datagram_endpoint(lambda: trunk, local_addr=("127.0.0.1", 0))
    SipCall.trunk = trunk
    SipCall._provisional = set()

    async def extra(calls: list[Call], service: Service, http: aiohttp.ClientSession) -> dict[str, Any]:
        sip = [c for c in calls if isinstance(c, SipCall)]
        byes = [c.bye_status for c in sip if c.dest is not None]
        metrics = ""
        try:
            metrics = await service.metrics(http)
        except aiohttp.ClientError:
            pass
        ports = [line for line in metrics.splitlines() if "rtp" in line and "port" in line and not line.startswith("#")]
        return {"bye_not_200": sum(1 for b in byes if b != 200), "requests_from_service": dict(trunk.requests),
                "rtp_port_metrics": ports[:4]}

    try:
        row = await measure(args, lambda i, n, t0, clip, svc: SipCall(i, n, t0, clip, svc),
                            declared_ms=jitter_depth_ms, declared_frames=depth_at_frames,
                            transport="sip/rtp PCMU", sip=True, extra=extra)
    finally:
        if trunk.transport is not None:
            trunk.transport.close()
    # Packets the service's jitter buffers never played as audio (skipped to shrink
    # the depth, or replaced by concealment): such a frame is still echoed as *a*
    # frame, so the echoed count cannot see it. Whole calls, warm-up included.
    jb = row.get("rtp_jitter") or {}
    row["rtp_not_played"] = (row["calls"] * FRAMES - int(jb["played"])) if "played" in jb else None
    if row.get("bye_not_200"):
        row["holds"] = False
    return row


def main(argv: list[str] | None = None) -> None:
    parser = new_parser("sip_calls", __doc__)
    add_call_args(parser)
    main_for("sip_calls", parser, argv, run_calls, lambda a: [], lambda a: "sip/rtp PCMU")


if __name__ == "__main__":
    main()
