"""The ``voxline`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _process(args: argparse.Namespace) -> int:
    from .tools.process import process_file

    return asyncio.run(process_file(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxline", description="Real-time voice pipeline service")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "process",
        help="run a WAV file through a call's media path and write what comes out",
        description=(
            "Carries a recording through the media path a phone call takes: resample to "
            "the codec's rate, encode, decode, resample to 16 kHz, VAD with endpointing, "
            "paced as live audio or as fast as possible. Writes the decoded audio, prints "
            "the speech segments found and the pipeline's per-stage statistics as JSON."
        ),
    )
    p.add_argument("input", help="input audio file (WAV, FLAC, ... anything soundfile reads)")
    p.add_argument("output", nargs="?", help="where to write the 16 kHz audio after the path")
    p.add_argument("--codec", default="PCMU", help="PCMU, PCMA, G722, opus or L16 (default PCMU)")
    p.add_argument("--vad", choices=("silero", "webrtc", "none"), default="silero")
    p.add_argument("--resampler", choices=("hq", "fast"), default="hq")
    p.add_argument("--realtime", action="store_true", help="pace frames at 20 ms as a live call")
    p.set_defaults(func=_process)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
