"""The ``voxline`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "serve_command"]

AGENTS = ("assistant", "echo", "transcribe")


def _process(args: argparse.Namespace) -> int:
    from .tools.process import process_file

    return asyncio.run(process_file(args))


def serve_command(args: argparse.Namespace, runtime_factory: Any = None) -> int:
    """``voxline serve``; ``runtime_factory`` lets tests run the same path on a fake runtime."""
    from .config import ConfigError, load_config
    from .control.logs import configure_logging
    from .control.serve import run

    overrides: dict[str, Any] = {
        "host": args.host,
        "http_port": args.http_port,
        "agent": args.agent,
        "max_sessions": args.max_sessions,
        "ice_hosts": tuple(args.ice_host) if args.ice_host else None,
        "audiosocket_port": args.audiosocket_port,
        "sip_host": args.sip_host,
        "sip_port": args.sip_port,
        "rtp_ports": args.rtp_ports,
        "data_dir": args.data_dir,
        "log_level": "DEBUG" if args.verbose else None,
    }
    try:
        config = load_config(args.config, None, overrides)
        configure_logging(config)
        return run(config, runtime_factory)
    except ConfigError as exc:
        print(f"voxline serve: {exc}", file=sys.stderr)
        return 2


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

    p = sub.add_parser(
        "serve",
        help="run the service: control API, WebRTC and the browser demo page",
        description=(
            "Serves the control API, WebRTC calls and the demo page (open the URL it logs). "
            "Settings come from --config (TOML), then VOXLINE_* environment variables, then "
            "these flags. Without API tokens it serves on loopback only. SIGTERM drains: no "
            "new calls, running calls get up to drain_timeout, then end."
        ),
    )
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, help="HTTP port (default 8080)")
    p.add_argument("--agent", choices=AGENTS, help="default agent for new sessions (default assistant)")
    p.add_argument("--max-sessions", type=int, help="sessions admitted at once (default 100)")
    p.add_argument(
        "--ice-host",
        action="append",
        metavar="ADDR",
        help="address to offer as a WebRTC host candidate (repeatable; 127.0.0.1 for a browser on this machine)",
    )
    p.add_argument("--audiosocket-port", type=int,
                   help="Asterisk AudioSocket TCP port on 127.0.0.1 (default 9092; -1: off)")
    p.add_argument("--sip-host", help="address for SIP and RTP (default 127.0.0.1)")
    p.add_argument("--sip-port", type=int, help="SIP port, UDP and TCP (default 5060; 0: any free port)")
    p.add_argument("--rtp-ports", help="RTP port range first-last (default 20000-20999)")
    p.add_argument("--data-dir", help="where call records are kept (default ./voxline-data)")
    p.set_defaults(func=serve_command)

    from .bench.cli import add_parser as add_bench

    add_bench(sub)
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
