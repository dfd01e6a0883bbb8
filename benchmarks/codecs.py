"""Per-20 ms-frame encode/decode cost of each codec.

Run: ``python -m benchmarks.codecs [--frames N] [--runs R]``. Each run pushes N
consecutive frames of a synthetic voice-like signal through one encoder (and
their payloads through one decoder), as a stream would; the figure is the
median over R runs of the run's time divided by N. Prints a table, then one
JSON line: {"benchmark": "codecs", "unit": "us_per_20ms_frame", "results": [...]}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

from voxline.codecs import (
    G722, OPUS, PCMA, PCMU, Codec, Encoder, G722Encoder, OpusConfig, l16, opus,
)

__all__ = ["Result", "bench_codec", "main"]

FRAME_MS = 20
SIGNAL_SECONDS = 1.0

Pcm = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class Result:
    codec: str
    encode_us: float
    decode_us: float
    payload_bytes: float  # mean per frame


def voice_like(rate: int, seconds: float = SIGNAL_SECONDS) -> Pcm:
    """Harmonics of a gliding 120-220 Hz pitch under a syllable-rate envelope,
    plus a little noise: enough structure that Opus and G.722 do real work."""
    rng = np.random.default_rng(0)
    t = np.arange(int(rate * seconds)) / rate
    pitch = 170 + 50 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12) if k * 220 < rate / 2)
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    signal = 6000 * envelope * voiced + 300 * rng.standard_normal(len(t))
    return np.clip(signal, -32768, 32767).astype(np.int16)


def _median_us_per_call(calls: Callable[[], None], count: int, runs: int) -> float:
    calls()  # warm up: first-call allocations, lazy codec opening
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        calls()
        times.append((time.perf_counter_ns() - start) / count / 1000)
    return statistics.median(times)


def bench_codec(
    label: str, codec: Codec, frames: int, runs: int,
    make_encoder: Callable[[], Encoder] | None = None,
) -> Result:
    n = codec.frame_samples(FRAME_MS)
    signal = voice_like(codec.rate)
    chunks = [signal[i : i + n] for i in range(0, len(signal) - n + 1, n)]
    stream = [chunks[i % len(chunks)] for i in range(frames)]

    encoder = codec.encoder() if make_encoder is None else make_encoder()
    encode = encoder.encode
    payloads: list[bytes] = []

    def encode_all() -> None:
        payloads[:] = [encode(pcm) for pcm in stream]

    encode_us = _median_us_per_call(encode_all, frames, runs)
    # Decode a payload sequence from one continuous encoder run.
    decode = codec.decoder().decode

    def decode_all() -> None:
        for payload in payloads:
            decode(payload)

    decode_us = _median_us_per_call(decode_all, frames, runs)
    return Result(label, encode_us, decode_us, float(np.mean([len(p) for p in payloads])))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500, help="frames per run")
    parser.add_argument("--runs", type=int, default=7, help="runs; the median is reported")
    args = parser.parse_args(argv)

    cases: list[tuple[str, Codec, Callable[[], Encoder] | None]] = [
        ("PCMU/8000", PCMU, None),
        ("PCMA/8000", PCMA, None),
        ("L16/16000 (big-endian)", l16(16000), None),
        ("L16LE/8000", l16(8000, little_endian=True), None),
        ("G722/8000 (16 kHz, granule 160)", G722, None),
        ("G722/8000 (16 kHz, granule 320)", G722, lambda: G722Encoder(granule=320)),
        ("opus/48000/2 (48 kHz, 32 kbit/s)", OPUS, None),
        ("opus/48000/2 (16 kHz, 32 kbit/s)", opus(OpusConfig(rate=16000)), None),
    ]
    results = [bench_codec(label, codec, args.frames, args.runs, make)
               for label, codec, make in cases]

    print(f"per {FRAME_MS} ms frame, median of {args.runs} runs x {args.frames} frames")
    print(f"{'codec':<36} {'encode µs':>10} {'decode µs':>10} {'bytes':>7}")
    for r in results:
        print(f"{r.codec:<36} {r.encode_us:>10.1f} {r.decode_us:>10.1f} {r.payload_bytes:>7.1f}")
    print(json.dumps({
        "benchmark": "codecs",
        "unit": "us_per_20ms_frame",
        "frames": args.frames,
        "runs": args.runs,
        "python": platform.python_version(),
        "av": av.__version__,
        "numpy": np.__version__,
        "results": [
            {"codec": r.codec, "encode_us": round(r.encode_us, 2),
             "decode_us": round(r.decode_us, 2), "payload_bytes": round(r.payload_bytes, 1)}
            for r in results
        ],
    }))


if __name__ == "__main__":
    main()
