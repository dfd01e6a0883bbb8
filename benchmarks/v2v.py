"""V2V: voice-to-voice latency in-process with the embedded models.

A caller asks short spoken questions (synthesised once with Piper, then resampled
to 16 kHz), fed frame by frame in real time into the service's own pipeline
(Silero VAD, whisper tiny.en, the GGUF LLM on llama.cpp, Piper, resampling,
playout). Per turn: from the end of the caller's speech *in the audio sent* to
the first reply audio *received* (energy onset at the sink), with the service's
own marks beside it for the per-stage breakdown against the budgets.

    python -m benchmarks.v2v [--turns 12] [--loop uvloop]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import numpy as np

from voxline.codecs import l16
from voxline.config import load_config
from voxline.control.runtime import Runtime
from voxline.control.session import SessionRegistry
from voxline.media.frames import Audio, Frame
from voxline.media.resample import resample_chunk
from voxline.transports.base import Port, SinkMode, TransportTraits, WireMedia

from .common import new_parser, run_main

QUESTIONS = (
    "What is the capital of France?",
    "How many days are there in a week?",
    "What colour is the sky on a clear day?",
    "Can you tell me a fun fact about cats?",
    "What is two plus two?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water?",
    "How many legs does a spider have?",
    "What is the largest planet in our solar system?",
    "Which ocean is the biggest?",
    "What do bees make?",
    "How many minutes are in an hour?",
)
RATE = 16000
FRAME = 320
ONSET = 300  # int16 RMS over a 20 ms frame: reply audio has started
SEGMENTS = ("vad_end", "transcript", "first_token", "first_sentence", "first_tts_audio", "first_played")


class InProcess:
    """The caller's wire: 16 kHz PCM frames in, a sink that notes the reply out."""

    kind = "in-process"
    traits = TransportTraits(WireMedia(l16(RATE), 20, decoded=True), sink=SinkMode.PUSH)

    def __init__(self, sink: Any) -> None:
        self.send = sink
        self.port: Port | None = None

    def attach(self, port: Port) -> None:
        self.port = port

    def clear(self) -> int:
        return 0

    def send_dtmf(self, digits: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        return {}


def speech_end(pcm: np.ndarray) -> int:
    """The sample after the last 10 ms window with speech energy."""
    n = len(pcm) // 160
    rms = np.sqrt(np.mean(pcm[: n * 160].astype(np.float64).reshape(n, 160) ** 2, axis=1))
    loud = np.nonzero(rms > 0.05 * rms.max())[0] if rms.max() > 0 else []
    return int(loud[-1] + 1) * 160 if len(loud) else -1


async def synthesise(runtime: Runtime, text: str) -> np.ndarray:
    tts = runtime.providers.tts
    chunks = [c async for c in tts.synthesize(text)]
    return resample_chunk(np.concatenate(chunks), tts.sample_rate, RATE)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    registry = SessionRegistry(4)
    overrides: dict[str, Any] = {"greet": False, "vad": "silero"}
    if args.temperature is not None:
        overrides["providers.llm.temperature"] = args.temperature
    cfg = load_config(overrides=overrides)  # VOXLINE_* env applies
    runtime = Runtime(cfg, registry)
    t_load = time.perf_counter()
    await runtime.start()
    load_s = time.perf_counter() - t_load
    if not runtime.readiness()["models"]:
        raise SystemExit("models did not load; see the log")
    questions = [await synthesise(runtime, q) for q in QUESTIONS[: args.turns]]

    loop = asyncio.get_running_loop()
    first_audio: dict[int, float] = {}

    def sink(frame: Frame) -> None:
        if type(frame) is Audio and frame.turn and frame.turn not in first_audio:
            rms = float(np.sqrt(np.mean(frame.pcm.astype(np.float64) ** 2)))
            if rms > ONSET:
                first_audio[frame.turn] = time.monotonic()

    session = registry.admit("bench", "in-process", "assistant")
    wire = InProcess(sink)
    pipe = await runtime.open(session, wire)
    assert wire.port is not None
    push = wire.port.receive
    agent = session.agent
    pts = 0
    t0 = time.monotonic()
    k = 0

    async def feed(pcm: np.ndarray) -> float | None:
        """Feed in real time; return when the frame holding the speech end was sent."""
        nonlocal pts, k
        end = speech_end(pcm)
        sent_end = None
        for start in range(0, len(pcm) - FRAME + 1, FRAME):
            await asyncio.sleep(max(0.0, t0 + k * 0.02 - time.monotonic()))
            k += 1
            now = time.monotonic()
            push(Audio(pcm[start : start + FRAME].copy(), RATE, pts, now))
            pts += FRAME
            if sent_end is None and start + FRAME >= end >= 0:
                # The speech ended inside this frame: count from that sample.
                sent_end = now - (start + FRAME - end) / RATE
        return sent_end

    silence = np.zeros(RATE // 2, np.int16)
    rows: list[dict[str, Any]] = []
    await feed(np.zeros(RATE, np.int16))  # let the VAD settle
    for turn, q in enumerate(questions, start=1):
        ended = await feed(q)
        assert ended is not None
        # Keep sending silence (a caller's line is never quiet of packets) until
        # the reply has been played, or 15 s.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            await feed(silence)
            if agent.state.value == "listening" and turn in first_audio:
                break
        rec = pipe.latency.turns.get(turn)
        marks = dict(rec.marks) if rec else {}
        reply = first_audio.get(turn)
        # The service's marks are on the loop's clock; the caller's times on
        # time.monotonic (the same clock for asyncio; uvloop's is whole ms).
        caller: dict[str, float] = {}
        if "speech_end" in marks:
            caller["marked_end_after_speech_end"] = round((marks["speech_end"] - ended) * 1000, 1)
        if "vad_end" in marks:
            caller["vad_end_after_speech_end"] = round((marks["vad_end"] - ended) * 1000, 1)
        if "first_played" in marks and reply is not None:
            caller["heard_after_first_played"] = round((reply - marks["first_played"]) * 1000, 1)
        row = {
            "turn": turn,
            "question": QUESTIONS[turn - 1],
            "v2v_ms": None if reply is None else round((reply - ended) * 1000, 1),
            "caller_ms": caller,
            "segments_ms": {} if rec is None else {m: round(v * 1000, 1) for m, v in rec.segments.items()},
            "violations": [] if rec is None else rec.violations,
            "said": next((m["content"] for m in reversed(agent.conversation.history())
                          if m["role"] == "assistant"), ""),
            "heard_as": next((m["content"] for m in reversed(agent.conversation.history())
                              if m["role"] == "user"), ""),
        }
        rows.append(row)
        print(f"turn {turn:2d}: v2v {row['v2v_ms']} ms  {row['segments_ms']}  {caller}  "
              f"heard {row['heard_as']!r} -> said {row['said'][:60]!r}", flush=True)
        await feed(np.zeros(RATE, np.int16))
    await pipe.stop("done")
    await runtime.stop()

    v2v = [r["v2v_ms"] for r in rows if r["v2v_ms"] is not None]
    per_segment = {
        s: round(statistics.median([r["segments_ms"][s] for r in rows if s in r["segments_ms"]]), 1)
        for s in SEGMENTS if any(s in r["segments_ms"] for r in rows)
    }
    caller_p50 = {
        k: round(statistics.median([r["caller_ms"][k] for r in rows if k in r["caller_ms"]]), 1)
        for k in ("marked_end_after_speech_end", "vad_end_after_speech_end", "heard_after_first_played")
        if any(k in r["caller_ms"] for r in rows)
    }
    return {
        "benchmark": "v2v",
        "caller_p50_ms": caller_p50,
        "turns": len(rows),
        "answered": len(v2v),
        "p50_ms": round(float(np.percentile(v2v, 50)), 1) if v2v else None,
        "p95_ms": round(float(np.percentile(v2v, 95)), 1) if v2v else None,
        "segments_p50_ms": per_segment,
        "budget_ms": pipe.budget.as_dict(),
        "model_load_s": round(load_s, 2),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = new_parser("v2v", __doc__)
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--temperature", type=float, default=None,
                        help="the LLM's sampling temperature (default: the service's); 0 makes the "
                             "answers, and so their lengths, the same in every run")
    run_main(parser, main_async, argv)


if __name__ == "__main__":
    main()
