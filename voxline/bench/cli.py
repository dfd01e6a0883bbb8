"""``voxline bench`` and ``voxline bench compare`` on the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["add_parser", "bench_command"]

log = logging.getLogger(__name__)

DESCRIPTION = """\
Plays simulated callers against a running voxline (--url) or one it starts in
this process, over a real transport, and times what they hear: voice-to-voice
per turn (end of the caller's speech in the audio sent to the first reply audio
received), barge-in (onset of speech over a reply until the reply stops and the
far end is cleared; then whether the agent answers), a cough over a reply (must
not stop it for good), the service's per-turn marks joined to each turn, and
with --ramp the capacity knee. --out DIR writes DIR/result.json and a
self-contained DIR/report.html.

  voxline bench --transport raw --calls 4 --turns 6 --out /tmp/bench
  voxline bench --url http://10.0.0.5:8080 --token T --transport webrtc --out run
  voxline bench compare A/result.json B/result.json
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="simulated callers against a voxline, timed at the caller",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("compare", nargs="*", metavar="compare A.json B.json",
                   help="print two results side by side with ratios instead of running")
    p.add_argument("--url", help="a running voxline (default: start one in this process)")
    p.add_argument("--token", default=None, help="API token (default: the first of VOXLINE_API_TOKENS)")
    p.add_argument("--transport", default="raw",
                   choices=("inprocess", "raw", "twilio", "audiosocket", "webrtc", "sip"))
    p.add_argument("--audiosocket", default="127.0.0.1:9092", help="the service's AudioSocket host:port (with --url)")
    p.add_argument("--sip", default=None, help="the service's SIP host:port, UDP (with --url; default: the URL's host:5060)")
    p.add_argument("--calls", type=int, default=1, help="concurrent callers")
    p.add_argument("--turns", type=int, default=6, help="turns per caller")
    p.add_argument("--agent", help="agent to ask for (default: the service's; 'delay' is the synthetic one)")
    p.add_argument("--config", help="TOML configuration for the service the harness starts")
    p.add_argument("--script", help="JSON script of turns (see voxline.bench.script)")
    p.add_argument("--speech", default="auto", choices=("auto", "synthetic", "sphinx", "tts"),
                   help="what callers say without --script: speech-like sounds, pocketsphinx-testdata "
                        "recordings, or questions voiced by --voice (auto: synthetic for echo/delay, else tts)")
    p.add_argument("--voice", default="piper",
                   help="who voices the questions: piper, espeak or espeak:<voice> (en-gb-x-rp, en-us+f3, ...); "
                        "several, comma-separated, take turns")
    p.add_argument("--no-bargein", dest="bargein", action="store_false",
                   help="only ask: no talking or coughing over replies")
    p.add_argument("--ramp", action="store_true", help="add callers until the service no longer holds")
    p.add_argument("--max-calls", type=int, default=32, help="the most callers a ramp tries")
    p.add_argument("--v2v-budget", type=float, help="V2V p95 budget in ms for the ramp (default: the service's)")
    p.add_argument("--loss", default="0", help="frames of what the caller sends lost: 5%% or 0.05")
    p.add_argument("--jitter", default="0", help="most a sent frame is delayed: 40ms")
    p.add_argument("--reorder", default="0", help="frames sent out of order: 1%%")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stagger", type=float, default=0.25, help="s between callers starting")
    p.add_argument("--transcribe", action="store_true",
                   help="transcribe each reply back (whisper) and check for the script's expected words")
    p.add_argument("--delay", type=float, default=0.3, help="the synthetic delay agent's reply delay, s")
    p.add_argument("--out", help="write DIR/result.json and DIR/report.html")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=bench_command)


def _fraction(text: str) -> float:
    t = str(text).strip()
    return float(t[:-1]) / 100 if t.endswith("%") else float(t)


def _ms(text: str) -> float:
    t = str(text).strip()
    if t.endswith("ms"):
        return float(t[:-2])
    if t.endswith("s"):
        return float(t[:-1]) * 1000
    return float(t)


def bench_command(args: argparse.Namespace) -> int:
    if args.compare:
        if len(args.compare) != 3 or args.compare[0] != "compare":
            print("voxline bench: usage: voxline bench compare A.json B.json", file=sys.stderr)
            return 2
        from .compare import compare

        print(compare(args.compare[1], args.compare[2]))
        return 0
    if args.transport == "inprocess" and args.url:
        print("voxline bench: --transport inprocess needs the service in this process (no --url)", file=sys.stderr)
        return 2
    from .run import Options

    try:
        opts = Options(transport=args.transport, calls=args.calls, turns=args.turns, agent=args.agent,
                       url=args.url, token=args.token, audiosocket=args.audiosocket, config=args.config,
                       script=args.script, speech=args.speech, bargein=args.bargein, ramp=args.ramp,
                       max_calls=args.max_calls, v2v_budget_ms=args.v2v_budget, loss=_fraction(args.loss),
                       jitter_ms=_ms(args.jitter), reorder=_fraction(args.reorder), seed=args.seed,
                       stagger=args.stagger, transcribe=args.transcribe, out=args.out, progress=args.progress,
                       delay=args.delay, sip=args.sip)
        from .voices import parse_voices

        parse_voices(args.voice)
    except ValueError as exc:
        print(f"voxline bench: {exc}", file=sys.stderr)
        return 2
    # Quiet the service's own lines while the callers run (a progress bar is on the
    # terminal), and leave the levels as they were: a caller's process may be logging.
    quiet = [logging.getLogger(n) for n in ("voxline", "aiortc", "aioice", "aiohttp.access")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        result = asyncio.run(run_bench(opts, args.voice))
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    from .run import write_result

    if opts.out:
        js, html = write_result(result, opts.out)
        print(f"wrote {js} and {html}", file=sys.stderr)
    v = result["v2v"]
    print(json.dumps({"transport": result["transport"], "turns": result["turns"], "answered": result["answered"],
                      "v2v_p50_ms": v["p50_ms"], "v2v_p95_ms": v["p95_ms"], "v2v_p99_ms": v["p99_ms"],
                      "bargein_stop_p50_ms": result["bargein"]["stop_ms"]["p50"],
                      "knee": result.get("capacity", {}).get("knee"), "errors": result["errors"][:5]}))
    return 0


@contextlib.asynccontextmanager
async def _target(opts: Any) -> AsyncIterator[Any]:
    from .lines import Target
    from .service import embedded

    if opts.url:
        token = opts.token or (os.environ.get("VOXLINE_API_TOKENS", "").split(",")[0] or None)
        host, _, port = opts.audiosocket.rpartition(":")
        extra: dict[str, Any] = {}
        if opts.sip:
            sip_host, _, sip_port = opts.sip.rpartition(":")
            extra["sip"] = (sip_host or "127.0.0.1", int(sip_port))
        yield Target(url=opts.url.rstrip("/"), token=token, audiosocket=(host or "127.0.0.1", int(port)),
                     extra=extra)
        return
    overrides: dict[str, Any] = {}
    if opts.agent == "delay":
        overrides["agent"] = "delay"  # AudioSocket names no agent: the default answers
    async with embedded(opts.config, overrides, delay=opts.delay) as target:
        yield target


async def run_bench(opts: Any, voice_name: str = "piper") -> dict[str, Any]:
    from .run import bench
    from .script import QUESTIONS, load_script, sphinx_script, synthetic_script, voice_texts
    from .service import describe
    from .voices import load_voice, load_voices, parse_voices

    names = parse_voices(voice_name)

    async with _target(opts) as target:
        service = await describe(target)
        agent = opts.agent or (service.get("config") or {}).get("agent")
        speech = opts.speech
        if speech == "auto":
            speech = "synthetic" if agent in ("echo", "delay") else "tts"
        if opts.script:
            voice = None
            import json as _json
            from pathlib import Path

            body = _json.loads(Path(opts.script).read_text())
            texts = [str(t["say"]) for t in (body["turns"] if isinstance(body, dict) else body) if "say" in t]
            if texts:
                voice = await load_voice(names[0], texts)
            turns = load_script(opts.script, voice, opts.bargein)
        elif speech == "synthetic":
            turns = synthetic_script(opts.turns, opts.bargein)
        elif speech == "sphinx":
            turns = sphinx_script(opts.turns, opts.bargein)
        else:
            pairs: list[tuple[str, tuple[str, ...]]] = [QUESTIONS[i % len(QUESTIONS)] for i in range(opts.turns)]
            from .script import INTERRUPTION

            voices = await load_voices(names, [p[0] for p in pairs] + [INTERRUPTION])
            turns = voice_texts(pairs, voices, opts.bargein, interruption=voices[0][1](INTERRUPTION))
        return await bench(opts, target, turns, service)
