"""Run inside a loopback-only network namespace: the service with its SIP door,
sent every RFC 4475 torture message over UDP and over TCP.

    unshare --net -- python -m tests.transports.sip.torture_ns TORTURE_DIR

The messages name hosts that are not ours (192.0.2.x, example.com); in this
namespace nothing can reach them, so whatever the service answers must go
back where each message came from. Prints one JSON object: for each tag the
responses heard over UDP and TCP, every destination the SIP door sent to,
the door's counters, and whether the service still answers (OPTIONS, /healthz).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from voxline.config import ServiceConfig
from voxline.control.app import DOORS, STATE, create_app
from voxline.control.runtime import Runtime
from voxline.transports.sip.errors import SipError
from voxline.transports.sip.framing import StreamFramer
from voxline.transports.sip.message import Response, parse_message

QUIET = 0.4  # s without a datagram after which a message has had its answers


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(100)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.queue.full():
            self.queue.put_nowait(data)


def statuses(datagrams: list[bytes]) -> list[int | str]:
    out: list[int | str] = []
    for d in datagrams:
        try:
            msg = parse_message(d, check=False)  # a 400 copies the request's bad header, as it must
        except SipError:
            out.append("unparseable")
            continue
        out.append(msg.status if isinstance(msg, Response) else f"request {msg.method}")
    return out


async def over_udp(data: bytes, server: tuple[str, int]) -> list[int | str]:
    loop = asyncio.get_running_loop()
    inbox = Inbox()
    t, _ = await loop.create_datagram_endpoint(lambda: inbox, local_addr=("127.0.0.1", 0))
    try:
        t.sendto(data, server)
        got: list[bytes] = []
        while True:
            try:
                got.append(await asyncio.wait_for(inbox.queue.get(), QUIET))
            except TimeoutError:
                return statuses(got)
    finally:
        t.close()


async def over_tcp(data: bytes, server: tuple[str, int]) -> list[int | str]:
    reader, writer = await asyncio.open_connection(*server)
    framer = StreamFramer()
    got: list[bytes] = []
    try:
        writer.write(data)
        await writer.drain()
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), QUIET)
            except TimeoutError:
                break
            if not chunk:
                got.append(b"closed")
                break
            try:
                got += [bytes(m) for m in framer.feed(chunk)]
            except SipError:
                got.append(b"unframeable")
                break
    finally:
        writer.close()
    return [g.decode() if g in (b"closed", b"unframeable") else s for g, s in zip(got, statuses(got), strict=True)]


async def run(torture_dir: Path, send: Any, port: int, sip_port: int) -> dict[str, Any]:
    """A fresh service (each pass its own: the same message again would be a
    retransmission of the first pass's transaction, absorbed by it), fed every
    message with ``send``."""
    config = ServiceConfig(agent="echo", vad="webrtc", greet=False, api_tokens=("t" * 24,), sip_port=sip_port,
                           rtp_ports="20000-20099", audiosocket_port=-1, max_sessions=0)
    app = create_app(config, Runtime)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    if app[STATE].start_task is not None:
        await app[STATE].start_task
    door = next(d.handle for d in app[DOORS] if d.name == "sip")
    assert door.listening, door.error
    sent_to: list[tuple[str, int]] = []
    door_send = door.net.send

    def recording_send(msg: Any, dest: tuple[str, int], reliable: bool) -> bool:
        sent_to.append(dest)
        return bool(door_send(msg, dest, reliable))

    door.net.send = recording_send
    results: dict[str, Any] = {}
    try:
        for path in sorted(torture_dir.glob("*.dat")):
            results[path.stem] = await send(path.read_bytes(), door.address)
        options = ("OPTIONS sip:voxline@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKafter\r\n"
                   "Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:voxline@127.0.0.1>\r\n"
                   "Call-ID: after@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        after = await send(options, door.address)
        async with ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as r:
            health = r.status
    finally:
        await server.close()
    return {"results": results, "sent_to": sorted({h for h, _ in sent_to}), "net": dict(door.net.counts),
            "options_after": after, "healthz": health}


async def main(torture_dir: Path) -> dict[str, Any]:
    return {"udp": await run(torture_dir, over_udp, 8080, 5060), "tcp": await run(torture_dir, over_tcp, 8081, 5070)}


if __name__ == "__main__":
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    print(json.dumps(asyncio.run(main(Path(sys.argv[1])))))
