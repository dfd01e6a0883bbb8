"""W3's shared harness: a real ``voxline serve`` on one core, N callers on the other.

``stream_calls`` (WebSocket media streams, AudioSocket) and ``sip_calls`` (SIP and
RTP) differ only in how a caller connects, sends a frame and recognises the echo;
everything else is here:

- the service: ``voxline serve`` as its own process, pinned to ``--cpu``, echo
  agent, no greeting, the VAD named by ``--vad``, limits raised past the ladder
  (``service``);
- the callers: this process, pinned to the other core (``--client-cpu``); each
  call's frames are sent from timer callbacks on W2's schedule (call i of N starts
  at clip frame (37·i) mod 600, its frame k is due at T0 + i·(20 ms / N) +
  k·20 ms; frames 100-599 measured, then up to 2 s of drain);
- the measures (``summarise``) and the ladder (``ladder``), with W2's ladder and
  bisection.

Latency of an echoed frame: the echo agent is a delay line, so the j-th 20 ms
frame a call gets back holds the audio of the j-th frame it sent (shifted by the
resamplers' few samples; the playout clock sends each frame in its slot as soon
as it is whole, so nothing waits for the next frame); latency = arrival of echoed
frame j − the moment the caller wrote frame j to its socket. From it W3 subtracts
the jitter-buffer depth the service declares on that path (``declared_ms``): none
on the WebSocket streams and AudioSocket (TCP: no jitter buffer), the RTP jitter
buffer's depth as each SIP call's session reports it. ``p50/p99/max_ms`` are that
excess, ``raw_p99_ms`` the whole send-to-echo time. W2's "p99 ≤ 20 ms" is applied
to the excess, as WORKLOADS.md's W3 states it. A frame lost shifts every later
frame's match by 20 ms, and shows as missing: such a run fails anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import psutil

from .common import add_common_args, apply_common, emit_json, percentiles, run
from .media_path import FRAME_S, FRAMES, LADDER, WARM, find_clip, load_clip

__all__ = ["Call", "Service", "free_port", "add_call_args", "measure", "ladder", "main_for", "TOKEN"]

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789abcdef"
DRAIN_S = 2.0
RESAMPLERS = {"fast": "soxr QQ (resample = fast), as W2 and the anchor", "hq": "libswresample (resample = hq)"}
CONNECT_RATE = 400.0  # calls set up per second before the measured part starts


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_udp_port() -> int:
    """A port free for both UDP and TCP now (SIP listens on both)."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket() as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both UDP and TCP")


class Service:
    """``voxline serve`` in its own process, pinned to one CPU."""

    def __init__(self, *, cpu: int | None, vad: str, max_calls: int, sip: bool = False, loop: str = "uvloop",
                 resample: str = "hq") -> None:
        self.cpu = cpu
        self.http_port = free_port()
        self.audiosocket_port = free_port()
        self.sip_port = free_tcp_udp_port() if sip else 0
        self.url = f"http://127.0.0.1:{self.http_port}"
        self._tmp = tempfile.TemporaryDirectory()
        conf = Path(self._tmp.name) / "voxline.toml"
        # Limits past the largest N: admission is not what is measured here.
        lines = [
            f'api_tokens = ["{TOKEN}"]', 'agent = "echo"', f'vad = "{vad}"', f'resample = "{resample}"', "greet = false",
            f"max_sessions = {max_calls + 100}", "max_sessions_per_token = 0", "max_pending_per_token = 0",
            "sessions_per_minute = 1000000.0", "session_burst = 100000", "pending_timeout = 120.0",
            f"max_connections = {max_calls + 200}", 'log_format = "text"', 'log_level = "WARNING"',
            f"http_port = {self.http_port}", f"audiosocket_port = {self.audiosocket_port}",
            f"sip_port = {self.sip_port if sip else free_tcp_udp_port()}", 'rtp_ports = "30000-39999"',
            "[streams]", "idle_timeout = 120.0", "start_timeout = 120.0",
        ]
        conf.write_text("\n".join(lines) + "\n")
        self.conf = conf
        self.log_path = Path(self._tmp.name) / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.loop = loop

    async def start(self, http: aiohttp.ClientSession) -> None:
        log = open(self.log_path, "wb")
        cpu = self.cpu

        def pin() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        self.proc = subprocess.Popen([sys.executable, "-m", "voxline", "serve", "--config", str(self.conf)],
                                     cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin,
                                     env={k: v for k, v in os.environ.items()  # the file says it all
                                          if not k.startswith("VOXLINE_") or k == "VOXLINE_CACHE"})
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"voxline serve exited:\n{self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(self.url + "/readyz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"voxline serve was not ready within 60 s:\n{self.log_tail()}")

    async def sessions(self, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
        async with http.get(self.url + "/v1/sessions", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            data = await r.json()
        return list(data.get("sessions", data) if isinstance(data, dict) else data)

    async def metrics(self, http: aiohttp.ClientSession) -> str:
        async with http.get(self.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            return await r.text()

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def errors(self) -> list[str]:
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()
            return [line for line in lines if " ERROR " in line or "Traceback" in line]
        return []

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        self._tmp.cleanup()


class Call:
    """One caller: W2's schedule out, the echo in. Transports fill in the wire."""

    def __init__(self, i: int, n: int, t0: float, clip: Sequence[bytes]) -> None:
        self.i = i
        self.first = (37 * i) % FRAMES
        self.base = t0 + i * (FRAME_S / n)
        self.clip = clip
        self.sent_at = np.full(FRAMES, np.nan)
        self.due = self.base + np.arange(FRAMES) * FRAME_S
        self.got_at: list[float] = []
        self.failed: str | None = None
        self.done = False

    # -- what a transport provides ------------------------------------------------
    async def connect(self) -> None:
        raise NotImplementedError

    def write(self, k: int, frame: bytes) -> None:
        """Send clip frame ``frame`` as the call's k-th frame (µ-law, 160 bytes)."""
        raise NotImplementedError

    async def hangup(self) -> None:
        raise NotImplementedError

    # -- the schedule -------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop, offset: float, finished: asyncio.Future[None],
              pending: list[int]) -> None:
        mono = time.monotonic
        sent_at = self.sent_at
        clip = self.clip
        first = self.first
        base = self.base + offset  # on the loop's clock
        call_at = loop.call_at

        def tick(k: int) -> None:
            if self.failed is None:
                sent_at[k] = mono()
                try:
                    self.write(k, clip[(first + k) % FRAMES])
                except Exception as exc:  # a socket gone: the call failed
                    self.failed = f"send: {type(exc).__name__}: {exc}"
            if k + 1 < FRAMES:
                call_at(base + (k + 1) * FRAME_S, tick, k + 1)
            else:
                pending[0] -= 1
                if not pending[0] and not finished.done():
                    finished.set_result(None)

        call_at(base, tick, 0)

    def received(self, now: float) -> None:
        self.got_at.append(now)


def add_call_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--ladder", action="store_true", help="find the largest N that holds")
    parser.add_argument("--resample", choices=tuple(RESAMPLERS), default="fast",
                        help="the service's paced resampler (its resample setting); fast is W2's and the "
                             "anchor's soxr QQ, hq the service's default")
    parser.add_argument("--vad", choices=("webrtc", "silero"), default="webrtc",
                        help="the service's VAD (W2's webrtc variant by default)")
    parser.add_argument("--p99-ms", type=float, default=20.0,
                        help="the p99 latency a run must keep to hold (default 20 ms, W3's criterion)")
    parser.add_argument("--tries", type=int, default=1,
                        help="ladder: runs of a failing N before it counts as failed (default 1, as W2)")
    parser.add_argument("--client-cpu", type=int, default=None,
                        help="pin the callers here (default: the CPU other than --cpu)")
    add_common_args(parser)


def client_cpu(args: argparse.Namespace) -> int | None:
    if args.client_cpu is not None:
        return int(args.client_cpu)
    if args.cpu is None:
        return None
    others = sorted(os.sched_getaffinity(0) - {args.cpu}) or sorted(os.sched_getaffinity(0))
    return others[0]


async def measure(
    args: argparse.Namespace,
    make_call: Callable[[int, int, float, Sequence[bytes], Service], Call],
    *,
    declared_ms: float | Callable[[list[dict[str, Any]]], float],
    declared_frames: Callable[[Call, list[dict[str, Any]]], tuple[np.ndarray, np.ndarray] | None] | None = None,
    transport: str,
    sip: bool = False,
    resampler: str | None = None,
    extra: Callable[[list[Call], Service, aiohttp.ClientSession], Any] | None = None,
) -> dict[str, Any]:
    n = args.calls
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    clip = load_clip(find_clip())
    service = Service(cpu=args.cpu, vad=args.vad, max_calls=n, sip=sip, loop=args.loop, resample=args.resample)
    if resampler is None:
        resampler = RESAMPLERS[args.resample]
    http = aiohttp.ClientSession()
    calls: list[Call] = []
    try:
        await service.start(http)
        assert service.proc is not None
        sproc = psutil.Process(service.proc.pid)
        rss0 = sproc.memory_info().rss
        loop = asyncio.get_running_loop()
        # Set every call up first (at CONNECT_RATE a second), then start the clock.
        setup = n / CONNECT_RATE
        t0 = time.monotonic() + setup + 1.0
        calls = [make_call(i, n, t0, clip, service) for i in range(n)]

        async def connect(c: Call) -> None:
            await asyncio.sleep(c.i / CONNECT_RATE)
            try:
                await asyncio.wait_for(c.connect(), 30)
            except Exception as exc:
                c.failed = f"connect: {type(exc).__name__}: {exc}"

        await asyncio.gather(*(connect(c) for c in calls))
        late_setup = max(0.0, time.monotonic() - (t0 - 0.2))
        if late_setup:  # setup took longer than planned: move the whole schedule
            for c in calls:
                c.base += late_setup + 0.2
                c.due += late_setup + 0.2
            t0 += late_setup + 0.2
        offset = loop.time() - time.monotonic()
        finished: asyncio.Future[None] = loop.create_future()
        pending = [n]
        gc.collect()
        gc.freeze()
        for c in calls:
            c.start(loop, offset, finished, pending)
        window_start, window_end = t0 + WARM * FRAME_S, t0 + FRAMES * FRAME_S
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        marks = {"t": time.monotonic(), "srv": _cpu(sproc), "cli": time.process_time(), "core": _core_busy(args.cpu)}
        await asyncio.sleep(max(0.0, window_end - time.monotonic()))
        window = time.monotonic() - marks["t"]
        srv_cpu = 100.0 * (_cpu(sproc) - marks["srv"]) / window
        cli_cpu = 100.0 * (time.process_time() - marks["cli"]) / window
        # Whatever else ran on the service's core meanwhile (the machine is shared).
        others = 100.0 * (_core_busy(args.cpu) - marks["core"]) / window - srv_cpu if args.cpu is not None else None
        await finished
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline and any(len(c.got_at) < FRAMES for c in calls if not c.failed):
            await asyncio.sleep(0.05)
        rss1 = sproc.memory_info().rss
        stats = await _sessions_stats(service, http)
        details = stats.pop("details")
        if callable(declared_ms):
            declared_ms = declared_ms(details)
        # The depth in effect when each frame arrived, where the service logs its changes.
        per_frame = {id(c): declared_frames(c, details) for c in calls} if declared_frames is not None else {}
        known = [v[0][WARM:] for v in per_frame.values() if v is not None]
        if known:
            declared_ms = float(np.median(np.concatenate(known)))
        jitter = _jitter_summary(details)
        await asyncio.gather(*(_quiet(c.hangup()) for c in calls))
        released, left = await _released(service, http)
        extra_out = await extra(calls, service, http) if extra is not None else {}
        row = summarise(calls, n, declared_ms, args.p99_ms, per_frame)
        if os.environ.get("W3_DUMP"):  # every call's send and echo times, for a closer look
            np.savez(os.environ["W3_DUMP"], sent=np.stack([c.sent_at for c in calls]),
                     got=np.array([np.pad(np.asarray(c.got_at[:FRAMES + 20]), (0, max(0, FRAMES + 20 - len(c.got_at))),
                                          constant_values=np.nan) for c in calls]))
        holds = row.pop("_holds") and released
        return {
            "workload": "W3",
            "transport": transport,
            "holds": bool(holds),
            "calls": n,
            "vad": args.vad,
            "p99_limit_ms": args.p99_ms,
            "resampler": resampler,
            **row,
            "declared_ms": round(declared_ms, 2),
            "server_cpu_pct": round(srv_cpu, 1),
            "client_cpu_pct": round(cli_cpu, 1),
            "others_on_server_core_pct": round(max(0.0, others), 1) if others is not None else None,
            "server_rss_per_call_kb": round((rss1 - rss0) / n / 1024, 1),
            "released": released,
            "sessions_left": left,
            "server_errors": service.errors()[:5],
            "session_stats": stats,
            **({"rtp_jitter": jitter} if jitter else {}),
            **extra_out,
        }
    finally:
        for c in calls:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.hangup(), 1)
        await http.close()
        service.stop()
        service.close()


async def _quiet(aw: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(aw, 5)


def _core_busy(cpu: int | None) -> float:
    """Seconds CPU ``cpu`` has been busy (user, nice, system, irq, softirq) since boot."""
    if cpu is None:
        return 0.0
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


async def _sessions_stats(service: Service, http: aiohttp.ClientSession) -> dict[str, Any]:
    """What the service counted on the calls still up (after the drain, before the
    hangups): audio dropped on its links and at the transport, each session's
    declared latency, and its transport's own stats (``session_details``)."""
    try:
        sessions = await service.sessions(http)
    except (aiohttp.ClientError, ValueError):
        return {"details": []}
    sem = asyncio.Semaphore(8)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def detail(sid: str) -> dict[str, Any]:
        async with sem:
            with contextlib.suppress(aiohttp.ClientError, ValueError):
                async with http.get(f"{service.url}/v1/sessions/{sid}", headers=auth) as r:
                    out: dict[str, Any] = await r.json()
                    return out
        return {}

    details = await asyncio.gather(*(detail(s["id"]) for s in sessions if isinstance(s, dict) and "id" in s))
    link_drops = head_drops = out_drops = 0
    for d in details:
        st = d.get("stats") or {}
        link_drops += sum(int(link.get("dropped", 0) or 0) for link in st.get("links", []) if isinstance(link, dict))
        head_drops += int(st.get("head_dropped", 0) or 0)
        out_drops += int((d.get("transport_stats") or {}).get("dropped_out", 0) or 0)
    return {"sessions_up": len(sessions), "link_drops": link_drops, "head_drops": head_drops,
            "transport_dropped_out": out_drops, "details": details}


def _jitter_summary(details: list[dict[str, Any]]) -> dict[str, Any]:
    """RTP calls: their jitter buffers' depth and what they concealed, dropped or found late."""
    ts = [d.get("transport_stats") or {} for d in details]
    jb = [t["jitter_buffer"] for t in ts if isinstance(t.get("jitter_buffer"), dict)]
    if not jb:
        return {}
    depths = np.array([float(j.get("depth", 0.0)) for j in jb]) * 1000
    return {"depth_ms": {"min": round(float(depths.min()), 1), "median": round(float(np.median(depths)), 1),
                         "max": round(float(depths.max()), 1)},
            **{k: int(sum(int(j.get(k, 0) or 0) for j in jb)) for k in ("played", "late", "overflow", "reordered", "duplicates")},
            **{k: int(sum(int(t.get(k, 0) or 0) for t in ts)) for k in ("concealed", "lost", "malformed")}}


async def _released(service: Service, http: aiohttp.ClientSession, timeout: float = 20.0) -> tuple[bool, int]:
    deadline = time.monotonic() + timeout
    left = -1
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, ValueError):
            left = len(await service.sessions(http))
            if left == 0:
                return True, 0
        await asyncio.sleep(0.2)
    return False, left


def summarise(calls: list[Call], n: int, declared_ms: float, p99_limit_ms: float = 20.0,
              per_frame: dict[int, tuple[np.ndarray, np.ndarray] | None] | None = None) -> dict[str, Any]:
    """Latency, loss and send rate over the measured frames (100-599) of every call.

    ``per_frame``: for a call whose service declared a latency that changed during
    the call, (the latency declared for each frame sent, in ms; for each echo, the
    frames the service discarded before it, so echo j is of frame j + shift[j]);
    else echo j is of frame j and ``declared_ms`` holds throughout. Frames the
    service declared discarded are counted as ``discarded``, not missing."""
    lat: list[np.ndarray] = []
    excess_parts: list[np.ndarray] = []
    sent_window = 0
    got_window = 0
    missing = 0
    failed = [c for c in calls if c.failed]
    lateness: list[np.ndarray] = []
    extra_frames = 0
    growth: list[float] = []  # per call: how much later the echo comes at the end than at the start
    discarded = 0
    for c in calls:
        sent = c.sent_at[WARM:]
        ok = ~np.isnan(sent)
        sent_window += int(ok.sum())
        lateness.append((sent[ok] - c.due[WARM:][ok]))
        mapped = (per_frame or {}).get(id(c))
        if mapped is not None:
            declared, shift = mapped
            got_all = np.asarray(c.got_at[: len(shift)], dtype=float)  # echoes after the snapshot are the tail
            src = np.arange(len(got_all)) + shift[: len(got_all)]
            keep = (src >= WARM) & (src < FRAMES) & ~np.isnan(c.sent_at[np.clip(src, 0, FRAMES - 1)])
            m = int(keep.sum())
            # Frames skipped between echoes are the service's declared discards; frames
            # never reached (the echo stream stopped short) are missing.
            dropped = int(src[keep].max() - src[keep].min() + 1 - m) if m else 0
            got_window += m
            discarded += dropped
            missing += max(0, int(ok.sum()) - m - dropped)
            call_lat = got_all[keep] - c.sent_at[src[keep]]
            call_declared: np.ndarray | float = declared[src[keep]]
        else:
            got = np.asarray(c.got_at[WARM:FRAMES], dtype=float)
            m = min(len(got), int(ok.sum()))
            got_window += m
            missing += int(ok.sum()) - m
            extra_frames += max(0, len(c.got_at) - FRAMES)
            call_lat, call_declared = got[:m] - sent[:m], declared_ms
        if m:
            lat.append(call_lat)
            excess_parts.append(call_lat * 1e3 - call_declared)
            if m >= 100:
                growth.append(float(np.median(call_lat[-50:]) - np.median(call_lat[:50])))
    all_lat = np.concatenate(lat) * 1e3 if lat else np.zeros(0)
    excess = np.concatenate(excess_parts) if excess_parts else np.zeros(0)
    late = np.concatenate(lateness) * 1e3 if lateness else np.zeros(0)
    pct = percentiles(excess * 1000)  # µs, as W2 reports
    raw = percentiles(all_lat * 1000)
    nominal = n * (FRAMES - WARM)
    holds = (
        bool(len(excess))
        and pct["p99_us"] <= p99_limit_ms * 1000
        and got_window >= 0.99 * sent_window
        and sent_window >= 0.99 * nominal
        and missing == 0
        and not failed
    )
    return {
        "_holds": holds,
        "p50_ms": round(pct["p50_us"] / 1000, 2),
        "p99_ms": round(pct["p99_us"] / 1000, 2),
        "max_ms": round(pct["max_us"] / 1000, 2),
        "raw_p50_ms": round(raw["p50_us"] / 1000, 2),
        "raw_p99_ms": round(raw["p99_us"] / 1000, 2),
        "sent": sent_window,
        "nominal": nominal,
        "echoed": got_window,
        "missing": missing,
        "discarded": discarded,
        "extra_frames": extra_frames,
        "failed_calls": len(failed),
        "failures": sorted({c.failed or "" for c in failed})[:5],
        # A stall's delay that stays for the rest of the call shows here (see the README's W3).
        "latency_growth_ms": {"median": round(1000 * float(np.median(growth)), 1),
                              "max": round(1000 * float(np.max(growth)), 1)} if growth else None,
        "send_lateness_p99_ms": round(float(np.percentile(late, 99)), 2) if len(late) else None,
        "send_lateness_max_ms": round(float(late.max()), 2) if len(late) else None,
    }


def one(module: str, n: int, args: argparse.Namespace, passthrough: list[str]) -> dict[str, Any]:
    """One N in a fresh interpreter and a fresh service."""
    cmd = [sys.executable, "-m", f"benchmarks.{module}", "--calls", str(n), "--vad", args.vad, "--resample", args.resample,
           "--loop", args.loop, "--p99-ms", str(args.p99_ms), *passthrough]
    if args.cpu is not None:
        cmd += ["--cpu", str(args.cpu)]
    if args.client_cpu is not None:
        cmd += ["--client-cpu", str(args.client_cpu)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode != 0 or not lines:
        return {"calls": n, "holds": False, "error": (res.stderr or res.stdout)[-2000:]}
    row: dict[str, Any] = orjson.loads(lines[-1])

    def ms(key: str) -> str:  # None when no frame came back at all (NaN in the JSON)
        v = row.get(key)
        return "   none" if v is None else f"{v:7.2f}"

    print(
        f"N={n:<5d} holds={row['holds']!s:5s} p50 {ms('p50_ms')} ms  p99 {ms('p99_ms')} ms  "
        f"max {ms('max_ms')} ms (send-to-echo p99 {ms('raw_p99_ms')})  "
        f"echoed {row['echoed']}/{row['sent']} (nominal {row['nominal']}), missing {row['missing']}, "
        f"failed {row['failed_calls']}  cpu srv {row['server_cpu_pct']}% cli {row['client_cpu_pct']}% "
        f"others on srv core {row.get('others_on_server_core_pct')}%  "
        f"released {row['released']}",
        flush=True,
    )
    return row


def ladder(module: str, args: argparse.Namespace, passthrough: list[str], transport: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    last_pass, first_fail = 0, None

    def attempt(n: int) -> dict[str, Any]:
        """One N, tried up to ``--tries`` times: it holds if one try holds (the
        machine is shared; every try is kept in ``rows``)."""
        for _ in range(max(1, args.tries)):
            row = one(module, n, args, passthrough)
            rows.append(row)
            if row["holds"]:
                break
        return row

    for n in LADDER:
        row = attempt(n)
        if row["holds"]:
            last_pass = n
        else:
            first_fail = n
            break
    while first_fail is not None and first_fail - last_pass > max(2, 0.1 * last_pass):
        mid = (last_pass + first_fail) // 2
        row = attempt(mid)
        if row["holds"]:
            last_pass = mid
        else:
            first_fail = mid
    return {
        "workload": "W3",
        "ladder": True,
        "transport": transport,
        "vad": args.vad,
        "tries": args.tries,
        "p99_limit_ms": args.p99_ms,
        "max_calls": last_pass,
        "first_fail": first_fail,
        "at_max": {k: held.get(k) for k in ("p50_ms", "p99_ms", "max_ms", "raw_p99_ms", "echoed", "sent",
                                           "missing", "failed_calls", "server_cpu_pct", "client_cpu_pct")}
        if (held := next((r for r in rows if r["calls"] == last_pass and r["holds"]), None)) else None,
        "rows": rows,
    }


def main_for(
    module: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    run_one: Callable[[argparse.Namespace], Any],
    passthrough: Callable[[argparse.Namespace], list[str]],
    transport: Callable[[argparse.Namespace], str],
) -> None:
    args = parser.parse_args(argv)
    if args.ladder:
        emit_json(ladder(module, args, passthrough(args), transport(args)))
        return
    args.server_cpu = args.cpu
    cpu = client_cpu(args)
    args.cpu_for_client = cpu
    server_cpu = args.cpu
    args.cpu = cpu
    apply_common(args)  # this process (the callers) on the other core
    args.cpu = server_cpu  # the service on --cpu
    emit_json(run(run_one(args), args.loop))
