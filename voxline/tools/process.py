"""``voxline process``: a recording through a phone call's media path.

The file is resampled to the codec's rate, encoded and decoded (what the network
would carry), resampled to 16 kHz and passed through the VAD and endpointer, in
20 ms frames, paced like a live call (``--realtime``) or as fast as it goes.
Prints one JSON object: speech segments, per-stage costs, declared budgets.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import numpy as np
import orjson
import soundfile

from voxline.codecs import CodecError, lookup
from voxline.media.clock import FakeClock
from voxline.media.codec_stage import Decode, Encode
from voxline.media.endpoint import EndpointConfig
from voxline.media.frames import Audio, EndOfStream, Frame, SpeechEnded, SpeechStarted
from voxline.media.pipeline import Pipeline
from voxline.media.resample import Resample
from voxline.media.silero import SileroBatcher, SileroModel
from voxline.media.vad import SileroVad, WebrtcVad

__all__ = ["process_file"]

RATE = 16000
CODECS = {"pcmu": ("PCMU", 8000, 1), "pcma": ("PCMA", 8000, 1), "g722": ("G722", 8000, 1),
          "opus": ("opus", 48000, 2), "l16": ("L16", 16000, 1)}


async def process_file(args: argparse.Namespace) -> int:
    try:
        name, clock_rate, channels = CODECS[args.codec.lower()]
        codec = lookup(name, clock_rate, channels)
    except (KeyError, CodecError):
        print(f"voxline: unknown codec {args.codec!r} (one of {', '.join(CODECS)})", file=sys.stderr)
        return 2
    try:
        data, rate = soundfile.read(args.input, dtype="int16", always_2d=True)
    except (OSError, RuntimeError) as exc:
        print(f"voxline: cannot read {args.input}: {exc}", file=sys.stderr)
        return 2
    pcm = data.mean(axis=1).astype(np.int16) if data.shape[1] > 1 else data[:, 0].copy()

    batcher: SileroBatcher | None = None
    stages: list[Any] = []
    if rate != codec.rate:
        stages.append(Resample(rate, codec.rate, args.resampler, name="resample_in"))
    stages += [Encode(codec), Decode(codec)]
    if codec.rate != RATE:
        stages.append(Resample(codec.rate, RATE, args.resampler, name="resample_16k"))
    if args.vad == "silero":
        # Offline: drive the batcher by hand after each frame instead of on its tick.
        batcher = SileroBatcher(SileroModel.load(), rate=RATE,
                                clock=None if args.realtime else FakeClock())
        stages.append(SileroVad(batcher, EndpointConfig(threshold=0.5, start=0.2, stop=0.3)))
        if args.realtime:
            await batcher.start()
    elif args.vad == "webrtc":
        stages.append(WebrtcVad(RATE, mode=3, config=EndpointConfig(start=0.2, stop=0.3)))

    out: list[np.ndarray] = []
    segments: list[dict[str, Any]] = []

    def sink(frame: Frame) -> None:
        t = type(frame)
        if t is Audio:
            out.append(frame.pcm)  # type: ignore[union-attr]
        elif t is SpeechStarted:
            segments.append({"turn": frame.turn, "start_s": round(frame.pts / RATE, 3)})  # type: ignore[union-attr]
        elif t is SpeechEnded and segments:
            segments[-1]["end_s"] = round(frame.pts / RATE, 3)  # type: ignore[union-attr]

    pipe = Pipeline(stages, sink, session_id="process")
    await pipe.start()
    step = rate // 50
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    wall = time.perf_counter()
    for k, start in enumerate(range(0, len(pcm), step)):
        if args.realtime:
            await asyncio.sleep(max(0.0, t0 + k * 0.02 - loop.time()))
        pipe.push(Audio(pcm[start : start + step], rate, start, loop.time()))
        if batcher is not None and not args.realtime:
            await batcher.run_once()
    if batcher is not None:
        await (asyncio.sleep(0.1) if args.realtime else batcher.run_once())
    pipe.push(Audio(np.zeros(step, np.int16), rate, len(pcm), loop.time()))  # last results out
    pipe.push(EndOfStream())
    failed = pipe.end_reason if pipe.end_reason and pipe.end_reason.startswith("error") else None
    await pipe.stop("done")
    if batcher is not None:
        await batcher.aclose()
    elapsed = time.perf_counter() - wall

    if args.output:
        soundfile.write(args.output, np.concatenate(out) if out else np.zeros(0, np.int16), RATE)
    report = {
        "input": args.input,
        "seconds": round(len(pcm) / rate, 3),
        "processing_s": round(elapsed, 3),
        "codec": codec.rtpmap,
        "vad": args.vad,
        "speech": segments,
        "budget": pipe.budget.as_dict(),
        "stages": pipe.stats()["stages"],
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    if failed:
        print(f"voxline: the pipeline failed: {failed}", file=sys.stderr)
        return 1
    return 0
