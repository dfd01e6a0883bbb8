"""Consecutive transforms fused into one call chain (``compile_chain``): what the
pipeline runs for each segment, so a transform costs a Python call, not a hop."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .frames import Frame
from .stage import SAMPLE_MASK, StageError, StageStats, Transform

__all__ = ["Chain", "compile_chain"]

Chain = Callable[[Frame], list[Frame]]
_ns = time.perf_counter_ns


def compile_chain(transforms: Sequence[tuple[Transform, StageStats]]) -> Chain:
    """Fuse transforms into one function ``frame -> [frames out]``.

    Each step is a closure calling the next directly, so a pass-through stage costs
    one Python call and two clock reads; the tail appends to the caller's list.
    """

    def tail(frame: Frame, out: list[Frame]) -> None:
        out.append(frame)

    step: Callable[[Frame, list[Frame]], None] = tail
    for transform, stats in reversed(transforms):
        step = _make_step(transform, stats, step)
    first = step

    def run(frame: Frame) -> list[Frame]:
        out: list[Frame] = []
        first(frame, out)
        return out

    return run


def _make_step(
    transform: Transform,
    stats: StageStats,
    nxt: Callable[[Frame, list[Frame]], None],
) -> Callable[[Frame, list[Frame]], None]:
    proc = transform.process
    name = transform.name
    record = stats.record

    def step(frame: Frame, out: list[Frame]) -> None:
        n = stats.count = stats.count + 1
        try:
            if n & SAMPLE_MASK != 1:
                produced = proc(frame)
            else:
                t0 = _ns()
                produced = proc(frame)
                record(_ns() - t0)
        except Exception as exc:
            stats.errors += 1
            raise StageError(name, exc) from exc
        for f in produced:
            nxt(f, out)

    return step
