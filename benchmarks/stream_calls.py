"""W3 over WebSocket media streams and AudioSocket: N echo calls per core.

A real ``voxline serve`` (echo agent, no greeting, webrtcvad or Silero) runs in
its own process pinned to ``--cpu``; this process, pinned to the other core,
places N calls over loopback sockets, one protocol per run:

- ``twilio``: ``/v1/streams/twilio`` as Twilio documents it: ``connected``,
  ``start`` (µ-law 8 kHz, the API token as a custom parameter), one ``media``
  message per 20 ms (base64 µ-law, numbered chunks and timestamps), ``stop``;
  the echo comes back as ``media`` messages;
- ``raw``: ``/v1/streams/raw?encoding=pcm16&rate=8000`` (``--rate 16000``: the
  clip resampled to 16 kHz, a path with no resampler in the service), one
  binary PCM16 message per 20 ms, ``{"type":"stop"}``; the echo is binary;
- ``audiosocket``: Asterisk's AudioSocket over TCP: the call's UUID, then one
  0x10 message (slin, 8 kHz) per 20 ms, hangup 0x00; the echo is 0x10 messages.
  voxline opens an AudioSocket call at its first audio, so by default each call
  sends one frame of silence when it connects (its echo is not counted) and the
  calls are open before the clock starts, as with the streams' start messages;
  ``--open first-frame`` opens them at their first scheduled frame instead.

The WebSocket client is a small asyncio protocol (RFC 6455 framing, masked as a
client must; pings answered) so the callers' core spends its time on the calls,
not in a client library's tasks. Frames follow W2's schedule and measures (see
``benchmarks/calls.py``): the clip at /work/shared/testdata (W2's), call i
starting at clip frame (37·i) mod 600 with its phase spread over the period,
frames 100-599 measured.

Latency, per echoed frame j of a call: its arrival − the moment the caller wrote
its frame j (these transports declare no jitter buffer: nothing is subtracted).
Holds at N iff p99 of
that ≤ 20 ms, every frame sent in the window came back (none missing after 2 s
of drain), at least 99% of the nominal 50·N frames/s were sent, no call failed,
and every session was released after the hangups.

    python -m benchmarks.stream_calls --transport twilio|raw|audiosocket --calls N --cpu 0
    python -m benchmarks.stream_calls --transport twilio --ladder --cpu 0

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import struct
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from voxline.codecs import PCMU
from voxline.transports.audiosocket import wire as asw

from .calls import TOKEN, Call, Service, add_call_args, main_for, measure
from .common import new_parser

try:  # aiohttp's C helper, masking in place
    from aiohttp._websocket.mask import _websocket_mask as _mask_c
except ImportError:  # pragma: no cover
    _mask_c = None

JITTER_MS = 0.0  # the jitter-buffer depth a stream declares: none (TCP)
SID = "MZ00000000000000000000000000000000"
ACCOUNT = "AC00000000000000000000000000000000"


def _mask(key: bytes, data: bytes) -> bytes:
    if _mask_c is not None:
        buf = bytearray(data)
        _mask_c(key, buf)
        return bytes(buf)
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


class WsClient(asyncio.Protocol):
    """A WebSocket client over one TCP connection: the handshake, then frames."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str], call: "WsCall") -> None:
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                        "Sec-WebSocket-Version: 13\r\n"
                        + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
        self.call = call
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.key = os.urandom(4)
        self._frag: bytearray | None = None
        self._frag_op = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"closed before the upgrade: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.call.lost(f"connection lost: {exc}" if exc else "connection closed")

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            if " 101 " not in head.split("\r\n", 1)[0]:
                self.upgraded.set_exception(ConnectionError(head.split("\r\n", 1)[0]))
                return
            self.upgraded.set_result(None)
        now = time.monotonic()
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            ln = b1 & 0x7F
            hdr = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = (buf[pos + 2] << 8) | buf[pos + 3]
                hdr = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            if b1 & 0x80:
                hdr += 4  # a server never masks; tolerated
            if n - pos < hdr + ln:
                break
            payload = bytes(buf[pos + hdr : pos + hdr + ln])
            pos += hdr + ln
            op = b0 & 0x0F
            fin = b0 & 0x80
            if op == 0:
                if self._frag is None:
                    continue
                self._frag += payload
                if not fin:
                    continue
                op, payload, self._frag = self._frag_op, bytes(self._frag), None
            elif op in (1, 2) and not fin:
                self._frag, self._frag_op = bytearray(payload), op
                continue
            if op == 1 or op == 2:
                self.call.on_message(op, payload, now)
            elif op == 9:
                self.send(10, payload)
            elif op == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                if not self.closed.done():
                    self.closed.set_result(code)
                self.call.lost(f"closed by the service: {code} {payload[2:].decode(errors='replace')}")
                self.send(8, payload[:2])
                if self.transport is not None:
                    self.transport.close()
        del buf[:pos]

    def send(self, op: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | op, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | op, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | op, 0x80 | 127, n)
        key = self.key
        assert self.transport is not None
        self.transport.write(head + key + _mask(key, payload))


class WsCall(Call):
    path = ""
    headers: dict[str, str] = {}

    def __init__(self, i: int, n: int, t0: float, clip: Sequence[bytes], service: Service) -> None:
        super().__init__(i, n, t0, clip)
        self.service = service
        self.ws: WsClient | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        ws = WsClient("127.0.0.1", self.service.http_port, self.path, self.headers, self)
        await loop.create_connection(lambda: ws, "127.0.0.1", self.service.http_port)
        await ws.upgraded
        self.ws = ws
        await self.opened()

    async def opened(self) -> None:
        return None

    def lost(self, reason: str) -> None:
        if not self.done and self.failed is None:
            self.failed = reason

    def on_message(self, op: int, payload: bytes, now: float) -> None:
        raise NotImplementedError

    async def hangup(self) -> None:
        self.done = True
        ws = self.ws
        if ws is None or ws.transport is None or ws.transport.is_closing():
            return
        self.goodbye()
        ws.send(8, struct.pack("!H", 1000))
        try:
            await asyncio.wait_for(asyncio.shield(ws.closed), 5)
        finally:
            ws.transport.close()

    def goodbye(self) -> None:
        return None


class TwilioCall(WsCall):
    path = "/v1/streams/twilio"
    B64: list[str] = []

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.seq = 0
        if not TwilioCall.B64:
            TwilioCall.B64 = [base64.b64encode(f).decode() for f in self.clip]
        self.sid = f"MZ{self.i:032x}"

    def _send(self, msg: dict[str, Any]) -> None:
        assert self.ws is not None
        self.ws.send(1, orjson.dumps(msg))

    async def opened(self) -> None:
        self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self.seq += 1
        self._send({"event": "start", "sequenceNumber": str(self.seq), "streamSid": self.sid, "start": {
            "streamSid": self.sid, "accountSid": ACCOUNT, "callSid": f"CA{self.i:032x}", "tracks": ["inbound"],
            "customParameters": {"token": TOKEN, "agent": "echo"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})

    def write(self, k: int, frame: bytes) -> None:
        self.seq += 1
        payload = self.B64[(self.first + k) % len(self.B64)]
        assert self.ws is not None
        self.ws.send(1, (f'{{"event":"media","sequenceNumber":"{self.seq}","streamSid":"{self.sid}",'
                         f'"media":{{"track":"inbound","chunk":"{k + 1}","timestamp":"{20 * k}",'
                         f'"payload":"{payload}"}}}}').encode())

    def on_message(self, op: int, payload: bytes, now: float) -> None:
        if op == 1 and payload.startswith(b'{"event":"media"'):
            self.got_at.append(now)

    def goodbye(self) -> None:
        self.seq += 1
        self._send({"event": "stop", "sequenceNumber": str(self.seq), "streamSid": self.sid,
                    "stop": {"accountSid": ACCOUNT, "callSid": f"CA{self.i:032x}"}})


class RawCall(WsCall):
    rate = 8000
    PCM: list[bytes] = []

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.path = f"/v1/streams/raw?encoding=pcm16&rate={self.rate}&agent=echo"
        self.headers = {"Authorization": f"Bearer {TOKEN}"}
        if not RawCall.PCM:
            RawCall.PCM = pcm_frames(self.clip, self.rate)

    def write(self, k: int, frame: bytes) -> None:
        assert self.ws is not None
        self.ws.send(2, self.PCM[(self.first + k) % len(self.PCM)])

    def on_message(self, op: int, payload: bytes, now: float) -> None:
        if op == 2:
            self.got_at.append(now)

    def goodbye(self) -> None:
        assert self.ws is not None
        self.ws.send(1, b'{"type":"stop"}')


def pcm_frames(clip: Sequence[bytes], rate: int) -> list[bytes]:
    """The clip as 20 ms of little-endian PCM16 per frame, at ``rate``."""
    dec = PCMU.decoder()
    pcm = np.concatenate([dec.decode(f) for f in clip]).astype(np.int16)
    if rate != 8000:
        import soxr

        pcm = soxr.resample(pcm, 8000, rate).astype(np.int16)
    per = rate // 50
    return [pcm[k * per : (k + 1) * per].astype("<i2").tobytes() for k in range(len(clip))]


class AudioSocketProtocol(asyncio.Protocol):
    def __init__(self, call: "AudioSocketCall") -> None:
        self.call = call
        self.framer = asw.Framer()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        for msg in self.framer.feed(data):
            if msg.kind == asw.AUDIO:
                if self.call.sent_at[0] == self.call.sent_at[0]:  # frame 0 is out (not NaN)
                    self.call.got_at.append(now)
                # else: the echo of the opening frame (``--open early``)
            elif msg.kind in (asw.HANGUP, asw.ERROR):
                self.call.lost(f"hangup from the service (0x{msg.kind:02x})")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self.call.lost(f"connection lost: {exc}" if exc else "connection closed")


class AudioSocketCall(Call):
    PCM: list[bytes] = []
    open_early = True

    def __init__(self, i: int, n: int, t0: float, clip: Sequence[bytes], service: Service) -> None:
        super().__init__(i, n, t0, clip)
        self.service = service
        self.proto: AudioSocketProtocol | None = None
        if not AudioSocketCall.PCM:
            AudioSocketCall.PCM = [asw.audio(asw.AUDIO, f) for f in pcm_frames(clip, 8000)]

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        proto = AudioSocketProtocol(self)
        await loop.create_connection(lambda: proto, "127.0.0.1", self.service.audiosocket_port)
        self.proto = proto
        assert proto.transport is not None
        proto.transport.write(bytes(asw.Message(asw.UUID, uuid.uuid4().bytes)))
        if self.open_early:
            # voxline opens the call at its first audio: one frame of silence now
            # opens it before the clock starts, as the streams' start messages do.
            proto.transport.write(asw.audio(asw.AUDIO, bytes(320)))

    def write(self, k: int, frame: bytes) -> None:
        assert self.proto is not None and self.proto.transport is not None
        self.proto.transport.write(self.PCM[(self.first + k) % len(self.PCM)])

    def lost(self, reason: str) -> None:
        if not self.done and self.failed is None:
            self.failed = reason

    async def hangup(self) -> None:
        self.done = True
        p = self.proto
        if p is None or p.transport is None or p.transport.is_closing():
            return
        p.transport.write(asw.hangup())
        try:
            await asyncio.wait_for(asyncio.shield(p.closed), 5)
        except TimeoutError:
            pass
        finally:
            p.transport.close()


TRANSPORTS = {"twilio": TwilioCall, "raw": RawCall, "audiosocket": AudioSocketCall}


async def run_calls(args: argparse.Namespace) -> dict[str, Any]:
    kind = TRANSPORTS[args.transport]
    if kind is RawCall:
        RawCall.rate = args.rate
    AudioSocketCall.open_early = args.open == "early"
    if kind is RawCall and args.rate == 16000:
        return await measure(args, kind, declared_ms=JITTER_MS, transport=_name(args),
                             resampler="none (16 kHz in and out)")
    return await measure(args, kind, declared_ms=JITTER_MS, transport=_name(args))


def _name(args: argparse.Namespace) -> str:
    if args.transport == "audiosocket":
        return f"audiosocket (calls opened {'before the clock' if args.open == 'early' else 'at their first frame'})"
    return f"raw pcm16 {args.rate} Hz" if args.transport == "raw" else args.transport


def main(argv: list[str] | None = None) -> None:
    parser = new_parser("stream_calls", __doc__)
    parser.add_argument("--transport", choices=tuple(TRANSPORTS), default="twilio")
    parser.add_argument("--rate", type=int, choices=(8000, 16000), default=8000,
                        help="raw only: the PCM16 rate (8000: W2's path, resampled both ways in the service)")
    parser.add_argument("--open", choices=("early", "first-frame"), default="early",
                        help="audiosocket only: open each call with a frame of silence before the clock "
                             "starts (default, as the streams' start messages do), or at its first "
                             "scheduled frame (every call of the run opens within one 20 ms period)")
    add_call_args(parser)
    main_for("stream_calls", parser, argv, run_calls,
             lambda a: ["--transport", a.transport, "--rate", str(a.rate), "--open", a.open], _name)


if __name__ == "__main__":
    main()
