"""W2: one call's media path, N calls in one process (see shared/WORKLOADS.md).

Per call: µ-law 20 ms frames in -> decode -> resample 8 -> 16 kHz -> VAD ->
resample 16 -> 8 kHz -> µ-law encode -> sink, as one voxline pipeline of fused
transforms. Call i starts at clip frame (37·i) mod 600; its frame k is due at
T0 + i·(20 ms / N) + k·20 ms and is handed in by the call's own ingress task.
Frames 100-599 are measured; e2e latency = sink arrival - scheduled time.

    python -m benchmarks.media_path --calls N --vad silero|webrtc|none [--cpu 0]
    python -m benchmarks.media_path --ladder --vad silero [--cpu 0]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil

from voxline.codecs import PCMU
from voxline.media.codec_stage import Decode, Encode
from voxline.media.frames import EndOfStream, Frame, Payload, SpeechStarted
from voxline.media.pipeline import Pipeline
from voxline.media.resample import Resample

from .common import add_common_args, apply_common, emit_json, percentiles, run

CLIP_SHA256 = "bb5fd836834206f9bb2d34bf51b2edf3e9cb870809f21a507cb26470d0d76906"
FRAMES = 600
WARM = 100
FRAME_S = 0.020
FRAME_BYTES = 160
DRAIN_S = 2.0
LADDER = (10, 25, 50, 100, 200, 400, 800, 1600)
ROOT = Path(__file__).resolve().parent.parent


def find_clip() -> Path:
    for cand in (
        ROOT.parent / "shared" / "testdata" / "w2_clip.ulaw",
        ROOT / "tests" / "data" / "w2_clip.ulaw",
    ):
        if cand.is_file():
            return cand
    raise SystemExit("w2_clip.ulaw not found: ../shared/testdata must sit beside the repo")


def load_clip(path: Path) -> list[bytes]:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != CLIP_SHA256:
        raise SystemExit(f"{path}: sha256 {digest} is not the W2 clip's {CLIP_SHA256}")
    return [data[i * FRAME_BYTES : (i + 1) * FRAME_BYTES] for i in range(FRAMES)]


class VadFactory:
    """Builds one VAD stage per call; Silero calls share one batcher."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.batcher: Any = None

    async def start(self) -> None:
        if self.kind == "silero":
            from voxline.media.silero import SileroBatcher, SileroModel

            self.batcher = SileroBatcher(SileroModel.load(), rate=16000)
            await self.batcher.start()

    def stage(self) -> Any:
        if self.kind == "none":
            return None
        from voxline.media.endpoint import EndpointConfig

        if self.kind == "webrtc":
            from voxline.media.vad import WebrtcVad

            return WebrtcVad(rate=16000, mode=3, config=EndpointConfig(start=0.2, stop=0.2))
        from voxline.media.vad import SileroVad

        return SileroVad(
            self.batcher, config=EndpointConfig(threshold=0.7, start=0.2, stop=0.2)
        )

    def decisions(self, stages: list[Any]) -> int:
        return sum(int(getattr(s, "decisions", 0)) for s in stages if s is not None)

    def skipped(self, stages: list[Any]) -> int:
        """Windows whose decision was never computed (dropped, or left unread)."""
        if self.batcher is None:
            return 0
        windows = sum(int(getattr(s, "windows", 0)) for s in stages if s is not None)
        return max(0, windows - self.decisions(stages))

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.aclose()


Taps = Callable[[int], tuple[Any, Any]]  # call index -> (stage after resample in, stage before encode)


def _cpu(proc: psutil.Process) -> tuple[float, float]:
    """CPU seconds so far: this process's and its children's (a recording worker's
    share), both counted in ``cpu_pct``; the children's also on their own."""
    kids = 0.0
    for child in proc.children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue
        kids += t.user + t.system
    return time.process_time() + kids, kids


async def run_calls(n: int, vad: str, quality: str, ingress_kind: str = "task",
                    taps: Taps | None = None) -> dict[str, Any]:
    """W2 for ``n`` calls; ``taps`` adds two transforms to each call (a recording's, in benchmarks/recording.py)."""
    clip = load_clip(find_clip())
    proc = psutil.Process()
    factory = VadFactory(vad)
    await factory.start()
    gc.collect()
    rss0 = proc.memory_info().rss

    mono = time.monotonic
    phase = FRAME_S / n
    t0 = mono() + 0.5 + n * 0.0005  # time to build every call first
    lat: list[float] = []
    received = [bytearray(FRAMES) for _ in range(n)]
    starts = [0] * n
    sent_window = 0
    window_start = t0 + WARM * FRAME_S
    window_end = t0 + FRAMES * FRAME_S

    pipes: list[Pipeline] = []
    vads: list[Any] = []
    for i in range(n):
        base = t0 + i * phase
        got = received[i]

        def sink(frame: Frame, base: float = base, got: bytearray = got, i: int = i) -> None:
            t = type(frame)
            if t is Payload:
                k = round((frame.arrival - base) / FRAME_S)
                if WARM <= k < FRAMES and not got[k]:
                    got[k] = 1
                    lat.append(mono() - frame.arrival)
            elif t is SpeechStarted:
                starts[i] += 1

        vad_stage = factory.stage()
        vads.append(vad_stage)
        tap_in, tap_out = taps(i) if taps is not None else (None, None)
        stages: list[Any] = [Decode(PCMU)]  # type: ignore[arg-type]
        if tap_in is not None:  # where the service taps a narrowband call: as it crossed the wire
            stages.append(tap_in)
        stages.append(Resample(8000, 16000, quality))  # type: ignore[arg-type]
        if vad_stage is not None:
            stages.append(vad_stage)
        stages.append(Resample(16000, 8000, quality, name="resample_16000_8000"))  # type: ignore[arg-type]
        if tap_out is not None:
            stages.append(tap_out)
        stages.append(Encode(PCMU))  # type: ignore[arg-type]
        p = Pipeline(stages, sink, session_id=f"call{i}")
        await p.start()
        pipes.append(p)

    async def ingress(i: int) -> None:
        nonlocal sent_window
        pipe = pipes[i]
        push = pipe.push
        start = (37 * i) % FRAMES
        base = t0 + i * phase
        sleep = asyncio.sleep
        for k in range(FRAMES):
            due = base + k * FRAME_S
            d = due - mono()
            if d > 0:
                await sleep(d)
            push(Payload(clip[(start + k) % FRAMES], "PCMU", 8000, k * FRAME_BYTES // 1, due))
            if k >= WARM:
                sent_window += 1

    async def ingress_callbacks(i: int) -> None:
        """Not W2's definition: each frame arrives as a timer callback, the way a
        datagram reaches DatagramProtocol.datagram_received, with no task to wake."""
        nonlocal sent_window
        loop = asyncio.get_running_loop()
        push = pipes[i].push
        start = (37 * i) % FRAMES
        base = t0 + i * phase
        offset = loop.time() - mono()  # loop.call_at runs on the loop's clock
        done = loop.create_future()

        def arrive(k: int) -> None:
            nonlocal sent_window
            push(Payload(clip[(start + k) % FRAMES], "PCMU", 8000, k * FRAME_BYTES, base + k * FRAME_S))
            if k >= WARM:
                sent_window += 1
            if k + 1 < FRAMES:
                loop.call_at(base + (k + 1) * FRAME_S + offset, arrive, k + 1)
            else:
                done.set_result(None)

        loop.call_at(base + offset, arrive, 0)
        await done

    cpu_marks: dict[str, float] = {}

    async def cpu_probe() -> None:
        await asyncio.sleep(max(0.0, window_start - mono()))
        cpu_marks["start"], cpu_marks["kids_start"] = _cpu(proc)
        cpu_marks["t_start"] = mono()
        await asyncio.sleep(max(0.0, window_end - mono()))
        cpu_marks["end"], cpu_marks["kids_end"] = _cpu(proc)
        cpu_marks["t_end"] = mono()

    probe = asyncio.create_task(cpu_probe())
    feed = ingress if ingress_kind == "task" else ingress_callbacks
    await asyncio.gather(*(feed(i) for i in range(n)))
    await probe
    # Drain: up to 2 s for what is still in flight (the Silero batcher included).
    deadline = mono() + DRAIN_S
    expected = n * (FRAMES - WARM)
    while mono() < deadline and sum(sum(g) for g in received) < expected:
        await asyncio.sleep(0.05)
    if factory.batcher is not None:
        # Let the last windows' results come back before counting them.
        await asyncio.sleep(0.1)
        for stage in vads:
            stage.process(EndOfStream())
    rss1 = proc.memory_info().rss
    decisions = factory.decisions(vads)
    skipped = factory.skipped(vads)
    for p in pipes:
        await p.stop()
    await factory.close()

    recv = sum(sum(g) for g in received)
    window = cpu_marks["t_end"] - cpu_marks["t_start"]
    cpu_pct = 100.0 * (cpu_marks["end"] - cpu_marks["start"]) / window
    kids_pct = 100.0 * (cpu_marks["kids_end"] - cpu_marks["kids_start"]) / window
    pct = percentiles(np.array(lat) * 1e6)
    nominal = 50.0 * n
    sent_rate = sent_window / (FRAMES - WARM) * 50.0
    recv_rate = recv / (FRAMES - WARM) * 50.0
    missing = expected - recv
    holds = (
        pct["p99_us"] <= 20_000
        and recv >= 0.99 * sent_window
        and sent_rate >= 0.99 * nominal
        and missing == 0
        and skipped == 0  # every VAD decision computed: none dropped to keep up
    )
    return {
        "workload": "W2",
        "holds": bool(holds),
        "calls": n,
        "vad": vad,
        "resampler": "soxr QQ" if quality == "fast" else "libswresample (av)",
        "ingress": ingress_kind,
        **pct,
        "sent_rate": round(sent_rate, 1),
        "recv_rate": round(recv_rate, 1),
        "nominal_rate": nominal,
        "missing": missing,
        "cpu_pct": round(cpu_pct, 1),
        "cpu_children_pct": round(kids_pct, 1),
        "rss_per_call_kb": round((rss1 - rss0) / n / 1024, 1),
        "vad_decisions": decisions,
        "vad_skipped": skipped,
        "speech_starts_per_call": round(sum(starts) / n, 2),
    }


def one(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one N in a fresh interpreter, so RSS and warm state are per run."""
    cmd = [sys.executable, "-m", "benchmarks.media_path", "--calls", str(n), "--vad", args.vad,
           "--resampler", args.resampler, "--loop", args.loop, "--ingress", args.ingress]
    if args.cpu is not None:
        cmd += ["--cpu", str(args.cpu)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode != 0 or not lines:
        raise SystemExit(f"run with {n} calls failed:\n{res.stdout}\n{res.stderr}")
    row: dict[str, Any] = orjson.loads(lines[-1])
    print(
        f"N={n:<5d} holds={row['holds']!s:5s} p50 {row['p50_us']/1000:7.2f} ms  "
        f"p99 {row['p99_us']/1000:7.2f} ms  max {row['max_us']/1000:7.2f} ms  "
        f"cpu {row['cpu_pct']:5.1f}%  recv {row['recv_rate']}/{row['nominal_rate']}  "
        f"missing {row['missing']}  rss/call {row['rss_per_call_kb']} kB  "
        f"vad {row['vad_decisions']} decided, {row['vad_skipped']} skipped",
        flush=True,
    )
    return row


def ladder(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    last_pass, first_fail = 0, None
    for n in LADDER:
        row = one(n, args)
        rows.append(row)
        if row["holds"]:
            last_pass = n
        else:
            first_fail = n
            break
    while first_fail is not None and first_fail - last_pass > max(2, 0.1 * last_pass):
        mid = (last_pass + first_fail) // 2
        row = one(mid, args)
        rows.append(row)
        if row["holds"]:
            last_pass = mid
        else:
            first_fail = mid
    return {
        "workload": "W2",
        "ladder": True,
        "vad": args.vad,
        "resampler": rows[0]["resampler"] if rows else None,
        "max_calls": last_pass,
        "first_fail": first_fail,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.media_path", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--vad", choices=("silero", "webrtc", "none"), default="silero")
    parser.add_argument("--resampler", choices=("fast", "hq"), default="fast",
                        help="fast: soxr QQ (the anchor's choice); hq: libswresample")
    parser.add_argument("--ladder", action="store_true", help="find the largest N that holds")
    parser.add_argument("--ingress", choices=("task", "callback"), default="task",
                        help="task: W2 as defined (one task per call sleeps until each frame); "
                             "callback: frames arrive as timer callbacks, like datagrams")
    add_common_args(parser)
    args = parser.parse_args(argv)
    apply_common(args)
    if args.ladder:
        emit_json(ladder(args))
        return
    if os.environ.get("VOXLINE_BENCH_GC_FREEZE", "1") == "1":
        gc.freeze()  # long-lived objects out of the collector's way, as the service does
    emit_json(run(run_calls(args.calls, args.vad, args.resampler, args.ingress), args.loop))


if __name__ == "__main__":
    main()
