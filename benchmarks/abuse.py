"""Hostile clients against a running service while real calls go on.

Starts ``voxline serve`` (the embedded default: assistant agent, models loaded)
as its own process, puts ``--calls`` echo calls on it over WebRTC (aiortc peers
sending a tone, each counting the frames it gets back), and once they run,
attacks it the ways a hostile client could, all at once:

- ``say``: an assistant session told to say 4096 characters, three times;
- ``idle`` / ``slowloris``: 500 connections that send nothing, 500 that trickle
  a request head a byte at a time;
- ``no_body``: 100 POSTs whose Content-Length promises a body that never comes;
- ``mlines``: 10 offers of 650 m-lines;
- ``pending``: one token's 15 offers whose ICE never completes;
- ``bad_auth``: 200 requests whose Authorization is not UTF-8;
- ``malformed``: 1000 requests aiohttp cannot parse.

Reported, per call over the measured window: the frames the service got of
those the caller sent (inbound) and the frames the caller got of those the
service sent (outbound) — the goal: every call >= 99% both ways — the longest
silence at the caller (a stalled loop shows here), /healthz answered throughout, what each attack got back, and the service's resident
memory at the start of the attacks, at its peak, and after they end (the goal:
within 50 MB of the start).

    python -m benchmarks.abuse [--calls 10] [--duration 40] [--no-warm]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voxline.transports.webrtc import gather_candidates
from voxline.transports.webrtc_call import EXAMPLE_OFFER

from .common import new_parser, run_main

ROOT = Path(__file__).resolve().parents[1]
VICTIM, ATTACKER = "victim-token-0123456789", "attacker-token-0123456789"
FRAME = 0.02


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Tone(MediaStreamTrack):
    """A 440 Hz tone at 48 kHz in 20 ms frames, paced like a microphone."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._n = 0
        self._start: float | None = None
        self.sent = 0

    async def recv(self) -> Any:
        import av

        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._n * FRAME - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(960) + self._n * 960) / 48000
        pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, self._n * 960
        self._n += 1
        self.sent += 1
        return frame


class Call:
    def __init__(self, http: aiohttp.ClientSession, url: str, token: str, agent: str, silent: bool = False) -> None:
        self.http, self.url, self.token, self.agent = http, url, token, agent
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.tone = Tone()
        self.silent = silent
        self.received = 0
        self.measuring = False
        self.max_gap = 0.0
        self.last: float | None = None
        self.sent_at_start = 0
        self.stats_at_start: dict[str, Any] = {}
        self.session_id = ""
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.silent:
            self.pc.addTransceiver("audio", direction="recvonly")
        else:
            self.pc.addTrack(self.tone)
        self.pc.on("track", self._on_track)
        offer = await self.pc.createOffer()
        await gather_candidates(self.pc, ("127.0.0.1",), scan_interfaces=False)
        await self.pc.setLocalDescription(offer)
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", "agent": self.agent}
        async with self.http.post(self.url + "/v1/webrtc/offer", json=body,
                                  headers={"Authorization": f"Bearer {self.token}"}) as resp:
            data = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"offer refused: {resp.status} {data}")
        self.session_id = data["session_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                now = time.monotonic()
                if self.measuring:
                    self.received += 1
                    if self.last is not None:
                        self.max_gap = max(self.max_gap, now - self.last)
                    self.last = now

    async def server_stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/v1/sessions/{self.session_id}",
                                 headers={"Authorization": f"Bearer {self.token}"}) as r:
            stats: dict[str, Any] = (await r.json()).get("transport_stats", {})
            return stats

    async def measure_from_now(self) -> None:
        self.measuring, self.received, self.max_gap, self.last = True, 0, 0.0, None
        self.sent_at_start = self.tone.sent
        self.stats_at_start = await self.server_stats()

    async def stop_measuring(self) -> dict[str, float]:
        self.measuring = False
        end = await self.server_stats()
        sent = self.tone.sent - self.sent_at_start
        got_in = end.get("frames_in", 0) - self.stats_at_start.get("frames_in", 0)
        out = sum(end.get(k, 0) - self.stats_at_start.get(k, 0) for k in ("frames_out", "silent_out"))
        return {
            "inbound": got_in / sent if sent else 0.0,  # what the service got of what the caller sent
            "outbound": self.received / out if out else 0.0,  # what the caller got of what the service sent
            "max_gap_ms": self.max_gap * 1000,  # the longest silence at the caller: a stall shows here
            "underruns": end.get("underruns", 0) - self.stats_at_start.get("underruns", 0),
        }

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.pc.close()


async def _raw(port: int, data: bytes, hold: float = 0.0, trickle: bool = False) -> bytes:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    except (OSError, TimeoutError) as exc:
        return f"connect failed: {exc}".encode()
    try:
        writer.write(data)
        await writer.drain()
        if trickle:
            end = time.monotonic() + hold
            while time.monotonic() < end and not reader.at_eof():
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(1.0)
        elif hold:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(reader.read(200), hold) or b"closed by server"
        return await asyncio.wait_for(reader.read(200), 15) or b"closed by server"
    except (OSError, TimeoutError, RuntimeError) as exc:  # RuntimeError: uvloop, writing to a closed transport
        return f"{type(exc).__name__}".encode()
    finally:
        writer.close()


def _status(reply: bytes) -> str:
    head = reply.split(b"\r\n", 1)[0].decode("latin-1")
    parts = head.split()
    return parts[1] if len(parts) > 1 and head.startswith("HTTP/") else head[:40] or "none"


def _tally(replies: list[bytes]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in replies:
        k = _status(r)
        out[k] = out.get(k, 0) + 1
    return out


ATTACKS = ("say", "idle", "slowloris", "no_body", "mlines", "pending", "bad_auth", "malformed")


async def _attacks(http: aiohttp.ClientSession, url: str, port: int, only: tuple[str, ...]) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {ATTACKER}"}
    results: dict[str, Any] = {}

    async def say() -> None:
        call = Call(http, url, ATTACKER, "assistant", silent=True)
        try:
            await call.start()
            for _ in range(100):  # until it is active
                async with http.get(f"{url}/v1/sessions/{call.session_id}", headers=auth) as r:
                    if (await r.json()).get("state") == "active":
                        break
                await asyncio.sleep(0.1)
            text = ("the quick brown fox jumps over the lazy dog and runs far away into the hills. " * 60)[:4096]
            codes = []
            for _ in range(3):
                async with http.post(f"{url}/v1/sessions/{call.session_id}/say", json={"text": text},
                                     headers=auth) as r:
                    codes.append(r.status)
                await asyncio.sleep(5)
            results["say"] = codes
            await asyncio.sleep(10)
        finally:
            await call.close()

    async def idle() -> None:
        results["idle"] = _tally(await asyncio.gather(*(_raw(port, b"", hold=30) for _ in range(500))))

    async def slowloris() -> None:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        results["slowloris"] = _tally(await asyncio.gather(*(_raw(port, head, 30, True) for _ in range(500))))

    async def no_body() -> None:
        head = (b"POST /v1/webrtc/offer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + ATTACKER.encode() + b"\r\nContent-Length: 1000\r\n\r\n")
        results["no_body"] = _tally(await asyncio.gather(*(_raw(port, head, hold=30) for _ in range(100))))

    async def mlines() -> None:
        head, _, tail = EXAMPLE_OFFER.partition("m=audio")
        section = "m=audio" + tail
        sdp = head + section * 650
        codes = []
        for _ in range(10):
            async with http.post(url + "/v1/webrtc/offer", json={"sdp": sdp[:64 * 1024], "type": "offer"},
                                 headers=auth) as r:
                codes.append(r.status)
        results["mlines"] = codes

    async def pending() -> None:
        codes = []
        for _ in range(15):
            async with http.post(url + "/v1/webrtc/offer", json={"sdp": EXAMPLE_OFFER, "type": "offer"},
                                 headers=auth) as r:
                codes.append(r.status)
            await asyncio.sleep(0.2)
        results["pending"] = codes

    async def bad_auth() -> None:
        req = b"GET /v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xfd\r\nConnection: close\r\n\r\n"
        results["bad_auth"] = _tally(await asyncio.gather(*(_raw(port, req) for _ in range(200))))

    async def malformed() -> None:
        reqs = [b"GET / HTTP/1.1\r\nX-Bad: \x00\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\x16\x03\x01\x02\x00\x01"]
        replies: list[bytes] = []
        for i in range(0, 1000, 50):
            replies += await asyncio.gather(*(_raw(port, reqs[(i + j) % 3]) for j in range(50)))
        results["malformed"] = _tally(replies)

    chosen = {name: fn for name, fn in locals().items() if name in ATTACKS and name in only}
    await asyncio.gather(*(fn() for fn in chosen.values()))
    return results


async def _health(http: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> dict[str, Any]:
    ok = failed = 0
    slowest = 0.0
    while not stop.is_set():
        t = time.monotonic()
        try:
            async with http.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as r:
                ok += r.status == 200
                failed += r.status != 200
        except (aiohttp.ClientError, TimeoutError):
            failed += 1
        slowest = max(slowest, time.monotonic() - t)
        await asyncio.sleep(0.5)
    return {"ok": ok, "failed": failed, "slowest_ms": round(slowest * 1000, 1)}


async def _warm(http: aiohttp.ClientSession, url: str) -> None:
    """The service in ordinary use before the baseline: one assistant call that is
    greeted and told one sentence. The first synthesis allocates what a voice
    keeps for good (its kernels, thread pools, phonemizer); that is not what an
    attack leaves behind, which is what the memory figure is about."""
    call = Call(http, url, VICTIM, "assistant", silent=True)
    auth = {"Authorization": f"Bearer {VICTIM}"}
    try:
        await call.start()
        for _ in range(100):
            async with http.get(f"{url}/v1/sessions/{call.session_id}", headers=auth) as r:
                if (await r.json()).get("state") == "active":
                    break
            await asyncio.sleep(0.1)
        async with http.post(f"{url}/v1/sessions/{call.session_id}/say", headers=auth,
                             json={"text": "Thank you for calling. How can I help you today?"}) as r:
            assert r.status == 202, r.status
        await asyncio.sleep(6)
    finally:
        await call.close()
    await asyncio.sleep(5)  # ended, and idle long enough for the trim


async def main(args: argparse.Namespace) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "voxline.toml"
        conf.write_text(f'api_tokens = ["{VICTIM}", "{ATTACKER}"]\nice_hosts = ["127.0.0.1"]\n'
                        f'vad = "{args.vad}"\nlog_format = "text"\nlog_level = "WARNING"\n')
        log = open(Path(tmp) / "serve.log", "w+")
        proc = subprocess.Popen([sys.executable, "-m", "voxline", "serve", "--config", str(conf),
                                 "--http-port", str(port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        http = aiohttp.ClientSession()
        calls: list[Call] = []
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                assert proc.poll() is None, "serve exited"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url + "/readyz") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.2)
            calls = [Call(http, url, VICTIM, "echo") for _ in range(args.calls)]
            for c in calls:
                await c.start()
            await asyncio.sleep(3)  # connected, audio flowing
            for c in calls:
                await c.measure_from_now()
            if not args.no_warm:
                await _warm(http, url)
            rss_start = _rss_mb(proc.pid)
            peak = rss_start
            stop = asyncio.Event()
            health = asyncio.create_task(_health(http, url, stop))

            async def sample() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, _rss_mb(proc.pid))
                    await asyncio.sleep(0.2)

            sampler = asyncio.create_task(sample())
            t0 = time.monotonic()
            attacks = await _attacks(http, url, port, tuple(args.only)) if not args.no_attacks else {}
            attack_s = time.monotonic() - t0
            await asyncio.sleep(max(0.0, args.duration - attack_s))
            measured = [await c.stop_measuring() for c in calls]
            await asyncio.sleep(args.settle)
            stop.set()
            healthz = await health
            await sampler
            rss_end = _rss_mb(proc.pid)
            inbound = [m["inbound"] for m in measured]
            outbound = [m["outbound"] for m in measured]
            return {
                "calls": args.calls,
                "inbound_ratio": {"min": round(min(inbound), 4), "median": round(float(np.median(inbound)), 4)},
                "outbound_ratio": {"min": round(min(outbound), 4), "median": round(float(np.median(outbound)), 4)},
                "calls_at_99": sum(min(m["inbound"], m["outbound"]) >= 0.99 for m in measured),
                "max_gap_ms": round(max(m["max_gap_ms"] for m in measured), 1),
                "underruns": sum(m["underruns"] for m in measured),
                "healthz": healthz,
                "attacks": attacks,
                "attack_seconds": round(attack_s, 1),
                "rss_mb": {"start": round(rss_start, 1), "peak": round(peak, 1), "end": round(rss_end, 1),
                           "end_minus_start": round(rss_end - rss_start, 1)},
            }
        finally:
            for c in calls:
                await c.close()
            await http.close()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.seek(0)
            lines = log.read().splitlines()
            errors = [i for i, line in enumerate(lines) if " ERROR " in line]
            if errors:
                first = "\n".join(lines[errors[0]:errors[0] + 30])
                print(f"{len(errors)} ERROR lines in the service log, the first:\n{first}", file=sys.stderr)
            log.close()


def cli(argv: list[str] | None = None) -> None:
    parser = new_parser("abuse", __doc__)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--duration", type=float, default=40.0, help="seconds the calls are measured over")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after the attacks before the last RSS")
    parser.add_argument("--vad", default="webrtc", choices=("webrtc", "silero"))
    parser.add_argument("--no-attacks", action="store_true", help="the calls alone: the baseline")
    parser.add_argument("--no-warm", action="store_true", help="take the memory baseline before any synthesis")
    parser.add_argument("--only", nargs="+", choices=ATTACKS, default=ATTACKS, help="these attacks only")
    run_main(parser, main, argv)


if __name__ == "__main__":
    cli()
