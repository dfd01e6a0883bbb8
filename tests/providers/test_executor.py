"""The inference executor gives memory back once its work is done."""

from __future__ import annotations

import asyncio

import pytest

from voxline.providers.executor import ExecutorConfig, InferenceExecutor

DEADLINE = 10.0  # s: for the trim timer to fire on a loaded machine


def _allocate() -> int:
    # Many mid-sized blocks, freed when the job returns: what an engine's
    # inference leaves in its thread's malloc arena.
    blocks = [bytearray(64 * 1024) for _ in range(2000)]
    return len(blocks)


async def test_the_executor_trims_the_heap_when_it_falls_idle() -> None:
    ex = InferenceExecutor(ExecutorConfig(threads=2))
    if ex.trimmer._trim is None:
        pytest.skip("this C library has no malloc_trim")
    try:
        await asyncio.gather(*(ex.run(_allocate) for _ in range(4)))
        async with asyncio.timeout(DEADLINE):
            while ex.trimmer.trims == 0:
                await asyncio.sleep(0.05)
        trims = ex.trimmer.trims
        # Jobs in quick succession: at most one trim per interval, and one after the last.
        for _ in range(10):
            await ex.run(_allocate)
        async with asyncio.timeout(DEADLINE):
            while ex.trimmer._timer is not None:
                await asyncio.sleep(0.05)
        assert trims < ex.trimmer.trims <= trims + 10
        assert ex.pending == 0
    finally:
        ex.shutdown()
