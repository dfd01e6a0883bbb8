"""W1: per-stage hop overhead (see shared/WORKLOADS.md).

A pipeline of K pass-through stages and a tail that records arrival time; frames
of 20 ms at 16 kHz mono int16; t0 taken immediately before the frame is handed to
the head. Two kinds of stage are measured:

- ``queued``: K workers, each behind its own bounded link (a task hop per stage,
  what every Pipecat processor costs);
- ``fused``: K transforms run inline in one call chain (voxline's default for
  per-frame DSP).

Modes: pingpong (one frame in flight; 200 warm-up + 2,000 measured), flood (5,000
frames back to back, the producer yielding once per frame), paced (one frame per
20 ms on an absolute schedule, 400 measured).

    python -m benchmarks.hop [--stages 1,5,10] [--kinds queued,fused]
                             [--modes pingpong,flood,paced] [--cpu 0] [--loop uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from voxline.media.frames import Audio, Frame
from voxline.media.link import Overflow
from voxline.media.pipeline import Pipeline
from voxline.media.stage import Emit, PassThrough

from .common import add_common_args, apply_common, emit_json, percentiles, run

FRAME = np.zeros(320, dtype=np.int16)
perf = time.perf_counter


class Hop:
    """A pass-through worker: one queued hop."""

    def __init__(self, name: str, capacity: int = 64) -> None:
        self.name = name
        self.latency = 0.0
        self.inbox_capacity = capacity
        self.overflow = Overflow.BLOCK

    async def process(self, frame: Frame, emit: Emit) -> None:
        await emit(frame)


def build(kind: str, k: int, sink: object) -> Pipeline:
    stages = [Hop(f"h{i}") if kind == "queued" else PassThrough(f"t{i}") for i in range(k)]
    return Pipeline(stages, sink)  # type: ignore[arg-type]


async def pingpong(kind: str, k: int, warm: int = 200, measured: int = 2000) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    waiter: list[asyncio.Future[float]] = []

    def sink(frame: Frame) -> None:
        t = perf()
        if waiter and not waiter[0].done():
            waiter[0].set_result(t)

    p = build(kind, k, sink)
    await p.start()
    lat: list[float] = []
    for i in range(warm + measured):
        fut: asyncio.Future[float] = loop.create_future()
        waiter[:] = [fut]
        frame = Audio(FRAME, 16000, i * 320)
        t0 = perf()
        p.push(frame)
        t1 = await fut
        if i >= warm:
            lat.append((t1 - t0) * 1e6)
    await p.stop()
    return {"mode": "pingpong", "kind": kind, "stages": k, **percentiles(lat)}


async def flood(kind: str, k: int, n: int = 5000) -> dict[str, object]:
    done = asyncio.get_running_loop().create_future()
    arrivals: list[float] = []
    sends: list[float] = []

    def sink(frame: Frame) -> None:
        arrivals.append(perf())
        if len(arrivals) == n and not done.done():
            done.set_result(None)

    p = build(kind, k, sink)
    await p.start()
    start = perf()
    for i in range(n):
        frame = Audio(FRAME, 16000, i * 320)
        sends.append(perf())
        await p.send(frame)
        await asyncio.sleep(0)
    await asyncio.wait_for(done, 60)
    elapsed = arrivals[-1] - start
    await p.stop()
    lat = (np.array(arrivals) - np.array(sends)) * 1e6
    return {
        "mode": "flood",
        "kind": kind,
        "stages": k,
        "frames_per_s": round(n / elapsed),
        **percentiles(lat),
    }


async def paced(kind: str, k: int, measured: int = 400, warm: int = 20) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    sent: dict[int, float] = {}

    def sink(frame: Frame) -> None:
        t = perf()
        assert type(frame) is Audio
        i = frame.pts // 320
        if i >= warm:
            lat.append((t - sent[i]) * 1e6)

    p = build(kind, k, sink)
    await p.start()
    t_start = loop.time() + 0.02
    for i in range(warm + measured):
        delay = t_start + i * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[i] = perf()
        p.push(Audio(FRAME, 16000, i * 320))
    await asyncio.sleep(0.05)
    await p.stop()
    return {"mode": "paced", "kind": kind, "stages": k, **percentiles(lat)}


MODES = {"pingpong": pingpong, "flood": flood, "paced": paced}


async def main_async(args: argparse.Namespace) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for mode in args.modes.split(","):
        for kind in args.kinds.split(","):
            for k in (int(x) for x in args.stages.split(",")):
                row = await MODES[mode](kind, k)
                row["loop"] = args.loop
                rows.append(row)
                print(
                    f"{mode:8s} {kind:6s} K={k:<3d} p50 {row['p50_us']:8.2f} us  "
                    f"p99 {row['p99_us']:8.2f} us  max {row['max_us']:9.2f} us"
                    + (f"  {row['frames_per_s']} frames/s" if "frames_per_s" in row else ""),
                    flush=True,
                )
    return rows


def per_stage(rows: list[dict[str, object]], mode: str, kind: str) -> float | None:
    pts = sorted((int(r["stages"]), float(r["p50_us"])) for r in rows  # type: ignore[arg-type]
                 if r["mode"] == mode and r["kind"] == kind)
    if len(pts) < 2:
        return None
    (k0, v0), (k1, v1) = pts[0], pts[-1]
    return round((v1 - v0) / (k1 - k0), 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default="1,5,10")
    parser.add_argument("--kinds", default="queued,fused")
    parser.add_argument("--modes", default="pingpong,flood,paced")
    add_common_args(parser)
    args = parser.parse_args(argv)
    apply_common(args)
    rows = run(main_async(args), args.loop)
    summary = {
        "workload": "W1",
        "loop": args.loop,
        "cpu": args.cpu,
        "per_stage_p50_us": {
            kind: per_stage(rows, "pingpong", kind) for kind in args.kinds.split(",")
        },
        "rows": rows,
    }
    emit_json(summary)


if __name__ == "__main__":
    main()
