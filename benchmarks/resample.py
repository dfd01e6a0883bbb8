"""Resampler candidates on 20 ms frames: cost, burstiness, delay, image and alias
rejection. The figures behind the choice in voxline/media/resample.py.

    python -m benchmarks.resample [--cpu 0] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import soxr

from voxline.media.resample import StreamResampler

from .common import emit_json

Stream = Callable[[np.ndarray], np.ndarray]


def make(kind: str, src: int, dst: int) -> Stream:
    if kind in ("hq", "fast"):
        return StreamResampler(src, dst, kind).process  # type: ignore[arg-type]
    s = soxr.ResampleStream(src, dst, 1, dtype="int16", quality=kind.split()[1])
    return s.resample_chunk  # type: ignore[no-any-return]


def tone(f: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * f * t)).astype(np.int16)


def stream(kind: str, x: np.ndarray, src: int, dst: int) -> tuple[np.ndarray, list[int]]:
    fn = make(kind, src, dst)
    outs = [fn(x[i : i + src // 50]) for i in range(0, len(x), src // 50)]
    return np.concatenate(outs), [len(o) for o in outs]


def level(y: np.ndarray, rate: int, f: float) -> float:
    y = y[len(y) // 4 : 3 * len(y) // 4].astype(float)
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    k = int(round(f * len(y) / rate))
    return 20 * np.log10(spec[max(k - 3, 0) : k + 4].max() + 1e-9)


def cost_us(kind: str, runs: int) -> float:
    x = (np.random.default_rng(0).standard_normal(160) * 3000).astype(np.int16)
    meds = []
    for _ in range(runs):
        fn = make(kind, 8000, 16000)
        for _ in range(200):
            fn(x)
        n = 20000
        t = time.perf_counter()
        for _ in range(n):
            fn(x)
        meds.append((time.perf_counter() - t) / n * 1e6)
    return round(statistics.median(meds), 2)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resample")
    parser.add_argument("--cpu", type=int)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.cpu is not None:
        import os

        os.sched_setaffinity(0, {args.cpu})
    rows = []
    for kind in ("fast", "hq", "soxr LQ", "soxr HQ"):
        up, sizes = stream(kind, tone(3000, 8000), 8000, 16000)
        image = level(up, 16000, 5000) - level(up, 16000, 3000)
        alias_out, _ = stream(kind, tone(6000, 16000), 16000, 8000)
        ref, _ = stream(kind, tone(2000, 16000), 16000, 8000)
        alias = level(alias_out, 8000, 2000) - level(ref, 8000, 2000)
        row = {
            "resampler": {"fast": "soxr QQ (fast)", "hq": "libswresample (hq)"}.get(kind, kind),
            "us_per_frame": cost_us(kind, args.runs),
            "first_frames": sizes[:6],
            "image_rejection_db": round(float(image), 1),
            "alias_rejection_db": round(float(alias), 1),
        }
        rows.append(row)
        print(f"{row['resampler']:22s} {row['us_per_frame']:6.2f} us  frames {row['first_frames']}  "
              f"image {row['image_rejection_db']:7.1f} dB  alias {row['alias_rejection_db']:7.1f} dB")
    emit_json({"benchmark": "resample", "rows": rows})


if __name__ == "__main__":
    main()
