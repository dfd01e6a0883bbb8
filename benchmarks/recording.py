"""What recording a call costs: W2 with and without it, and a long call's memory.

1. **W2 with recording** (see shared/WORKLOADS.md and media_path.py): the same
   N calls, each with the service's recording taps (``media.recorder.Tap``: as
   the runtime places them on a narrowband call, the caller's side as decoded,
   before resampling in, the agent's before encoding; a stereo WAV per call at
   the wire's 8 kHz, streamed to disk by the shared writer thread). Runs without and with
   recording alternate (each in a fresh interpreter), ``--pairs`` times; the
   figure is the ratio of the medians, with / without, of CPU per window and of
   p99 latency, and both must hold W2's criteria.
2. **A 10-minute recorded call** (``--minutes``): one ``CallRecording`` fed both
   sides' 20 ms frames faster than real time on a simulated clock (the frames'
   times are what a real call's would be), paced so its bounded queue never
   overflows; RSS is sampled every simulated minute. Flat means the recording
   holds no more than its ``HOLD`` of audio whatever the length of the call.

    python -m benchmarks.recording --calls 50 --vad webrtc --pairs 3 [--cpu 0]
    python -m benchmarks.recording --minutes 10

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
import soundfile as sf

from voxline.media.frames import Audio
from voxline.media.recorder import AGENT, CALLER, CallRecording, Tap
from voxline.records.recording import StereoRecording

from .common import add_common_args, apply_common, emit_json, run
from .media_path import run_calls

ROOT = Path(__file__).resolve().parent.parent
FRAME_S = 0.02


RECORDERS = {"records": StereoRecording, "media": CallRecording}


async def w2(n: int, vad: str, quality: str, record: bool, recorder: str = "records") -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="voxline-rec-") as tmp:
        recordings: list[Any] = []

        def taps(i: int) -> tuple[Any, Any]:
            path = Path(tmp) / f"call{i}.wav"
            # As the runtime records a narrowband call: at its wire rate (the old recorder: 16 kHz).
            rec: Any = StereoRecording(path, time.monotonic, rate=8000) if recorder == "records" \
                else CallRecording(path, time.monotonic)
            recordings.append(rec)
            return Tap(rec, CALLER, "record_caller", owns=True), Tap(rec, AGENT, "record_agent")

        row = await run_calls(n, vad, quality, taps=taps if record else None)
        await asyncio.gather(*(asyncio.to_thread(r.close) for r in recordings))
        row["record"] = record
        row["recorder"] = recorder
        row["recording_dropped"] = sum(r.dropped for r in recordings)
        if recordings:
            info = sf.info(str(recordings[0].path))
            row["recording_seconds"] = round(info.frames / info.samplerate, 2)
        return row


def one(args: argparse.Namespace, record: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.recording", "--one", "--calls", str(args.calls), "--vad", args.vad,
           "--resampler", args.resampler, "--loop", args.loop, "--recorder", args.recorder] + \
        (["--record"] if record else [])
    if args.cpu is not None:
        cmd += ["--cpu", str(args.cpu)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode != 0 or not lines:
        raise SystemExit(f"run failed:\n{res.stdout}\n{res.stderr}")
    row: dict[str, Any] = orjson.loads(lines[-1])
    print(f"record={record!s:5s} holds={row['holds']!s:5s} p50 {row['p50_us'] / 1000:6.2f} ms  "
          f"p99 {row['p99_us'] / 1000:6.2f} ms  cpu {row['cpu_pct']:5.1f}% (worker {row['cpu_children_pct']:4.1f}%)  missing {row['missing']}  "
          f"rss/call {row['rss_per_call_kb']} kB  dropped {row['recording_dropped']}", flush=True)
    return row


def compare(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for _ in range(args.pairs):  # interleaved: the machine's drift falls on both alike
        rows.append(one(args, False))
        rows.append(one(args, True))
    off = [r for r in rows if not r["record"]]
    on = [r for r in rows if r["record"]]

    def med(rs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in rs))

    cpu_ratio = med(on, "cpu_pct") / med(off, "cpu_pct")
    p99_ratio = med(on, "p99_us") / med(off, "p99_us")
    return {
        "benchmark": "recording-w2", "calls": args.calls, "vad": args.vad, "pairs": args.pairs,
        "recorder": args.recorder,
        "cpu_pct_without": med(off, "cpu_pct"), "cpu_pct_with": med(on, "cpu_pct"),
        "cpu_ratio": round(cpu_ratio, 3),
        "p99_ms_without": round(med(off, "p99_us") / 1000, 2), "p99_ms_with": round(med(on, "p99_us") / 1000, 2),
        "p99_ratio": round(p99_ratio, 3),
        "all_hold": all(r["holds"] for r in rows),
        "recording_dropped": sum(r["recording_dropped"] for r in on),
        "within_10pct": cpu_ratio <= 1.10 and all(r["holds"] for r in rows),
        "rows": rows,
    }


def long_call(minutes: float, recorder: str = "records") -> dict[str, Any]:
    """One recorded call of ``minutes``, fed as fast as its writer takes it."""
    proc = psutil.Process()
    rng = np.random.default_rng(0)
    caller = rng.integers(-3000, 3000, 320, dtype=np.int16)  # 20 ms at 16 kHz
    agent = rng.integers(-3000, 3000, 160, dtype=np.int16)  # 20 ms at 8 kHz: resampled by the writer
    now = [0.0]
    with tempfile.TemporaryDirectory(prefix="voxline-rec-") as tmp:
        path = Path(tmp) / "long.wav"
        rec = RECORDERS[recorder](path, lambda: now[0])
        frames = int(minutes * 60 / FRAME_S)
        per_minute = int(60 / FRAME_S)
        gc.collect()
        samples: list[dict[str, float]] = []
        rss0 = proc.memory_info().rss
        started = time.perf_counter()
        for k in range(frames):
            now[0] = k * FRAME_S
            rec.put(CALLER, Audio(caller, 16000, k * 320, now[0]))
            rec.put(AGENT, Audio(agent, 8000, k * 160, now[0]))
            if k % 200 == 199:  # pace: let the writer catch up (its queue holds 5 s a side)
                target = int((now[0] - 1.0) * 16000)
                while rec.written < target and rec.error is None:
                    time.sleep(0.001)
            if k % per_minute == per_minute - 1:
                samples.append({"minute": round((k + 1) * FRAME_S / 60, 1),
                                "rss_mb": round(proc.memory_info().rss / 2**20, 2)})
        rec.close()
        elapsed = time.perf_counter() - started
        info = sf.info(str(path))
        growth = samples[-1]["rss_mb"] - samples[0]["rss_mb"] if samples else 0.0
        return {
            "benchmark": "recording-long-call", "minutes": minutes,
            "fed_seconds": round(elapsed, 1), "speed_x_realtime": round(minutes * 60 / elapsed, 1),
            "rss_start_mb": round(rss0 / 2**20, 2), "samples": samples,
            "rss_growth_mb_first_to_last_minute": round(growth, 2),
            "recorder": recorder,
        "recorded_seconds": round(info.frames / info.samplerate, 2), "channels": info.channels,
            "file_mb": round(path.stat().st_size / 2**20, 1), "dropped": rec.dropped, "error": rec.error,
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recording", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--vad", choices=("silero", "webrtc", "none"), default="webrtc")
    parser.add_argument("--resampler", choices=("fast", "hq"), default="fast")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--recorder", choices=tuple(RECORDERS), default="records",
                        help="records: the service's (records/recording.py); media: media.recorder.CallRecording")
    parser.add_argument("--minutes", type=float, default=None, help="the long-call memory run instead")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--record", action="store_true", help=argparse.SUPPRESS)
    add_common_args(parser)
    args = parser.parse_args(argv)
    apply_common(args)
    if args.minutes is not None:
        emit_json(long_call(args.minutes, args.recorder))
    elif args.one:
        gc.freeze()
        emit_json(run(w2(args.calls, args.vad, args.resampler, args.record, args.recorder), args.loop))
    else:
        emit_json(compare(args))


if __name__ == "__main__":
    main()
