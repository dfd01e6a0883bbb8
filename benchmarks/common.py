"""Shared pieces of the benchmarks: pinning, loop choice, percentiles, output."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import numpy as np
import orjson

__all__ = ["add_common_args", "apply_common", "emit_json", "new_parser", "percentiles", "run", "run_main"]


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop implementation (default uvloop, as the service runs)",
    )


def apply_common(args: argparse.Namespace) -> None:
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})


def run(main: Coroutine[Any, Any, Any], loop: str) -> Any:
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("uvloop is not installed; using asyncio", file=sys.stderr)
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def percentiles(values_us: Sequence[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(values_us, dtype=float)
    if not len(a):
        return {"p50_us": float("nan"), "p99_us": float("nan"), "max_us": float("nan")}
    return {
        "p50_us": round(float(np.percentile(a, 50)), 2),
        "p99_us": round(float(np.percentile(a, 99)), 2),
        "max_us": round(float(a.max()), 2),
    }


def emit_json(obj: object, out: Callable[[str], None] = print) -> None:
    out(orjson.dumps(obj).decode())


def new_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's argument parser, its module docstring as the help text."""
    return argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def run_main(
    parser: argparse.ArgumentParser,
    main_async: Callable[[argparse.Namespace], Coroutine[Any, Any, Any]],
    argv: Sequence[str] | None,
) -> None:
    """Add the common flags, parse, apply them, run and print the result as JSON."""
    add_common_args(parser)
    args = parser.parse_args(argv)
    apply_common(args)
    emit_json(run(main_async(args), args.loop))
