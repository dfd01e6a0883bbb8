import asyncio

import pytest

from voxline.media.frames import EndOfStream, Interrupt
from voxline.media.link import Link, LinkClosed, LinkFull, LinkTimeout, Overflow

from .helpers import audio


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        Link(0)


async def test_drop_oldest_counts_exactly() -> None:
    link = Link(3, Overflow.DROP_OLDEST, "l")
    for i in range(10):
        link.put_nowait(audio(i))
    assert link.dropped == 7
    got = [link.get_nowait().pts // 320 for _ in range(3)]  # type: ignore[union-attr]
    assert got == [7, 8, 9]
    assert link.get_nowait() is None
    s = link.stats()
    assert (s.put, s.got, s.dropped, s.high_water, s.depth) == (10, 3, 7, 3, 0)


async def test_block_raises_when_full_without_waiting() -> None:
    link = Link(2, Overflow.BLOCK)
    link.put_nowait(audio(0))
    link.put_nowait(audio(1))
    with pytest.raises(LinkFull, match="full"):
        link.put_nowait(audio(2))
    assert link.dropped == 0


async def test_block_put_waits_for_room_then_proceeds() -> None:
    link = Link(1, Overflow.BLOCK)
    link.put_nowait(audio(0))
    waiter = asyncio.create_task(link.put(audio(1)))
    await asyncio.sleep(0)
    assert not waiter.done()  # backpressure: the producer is held
    assert link.get_nowait().pts == 0  # type: ignore[union-attr]
    await asyncio.wait_for(waiter, 1)
    assert link.get_nowait().pts == 320  # type: ignore[union-attr]


async def test_block_put_has_a_deadline() -> None:
    link = Link(1, Overflow.BLOCK, "tts")
    link.put_nowait(audio(0))
    with pytest.raises(LinkTimeout, match="tts stayed full"):
        await link.put(audio(1), timeout=0.01)
    assert len(link) == 1


async def test_interrupt_overtakes_data_and_coalesces() -> None:
    link = Link(4, Overflow.DROP_OLDEST)
    link.put_nowait(audio(0))
    link.put_nowait(audio(1))
    link.put_nowait(Interrupt())
    link.put_nowait(Interrupt())  # redundant while one is pending
    assert type(link.get_nowait()) is Interrupt
    assert link.get_nowait().pts == 0  # type: ignore[union-attr]
    assert link.get_nowait().pts == 320  # type: ignore[union-attr]
    assert link.get_nowait() is None


async def test_end_of_stream_waits_behind_data_and_is_never_dropped() -> None:
    link = Link(2, Overflow.DROP_OLDEST)
    link.put_nowait(audio(0))
    link.put_nowait(audio(1))
    link.put_nowait(EndOfStream())  # beyond capacity, yet kept
    assert link.dropped == 0
    with pytest.raises(LinkClosed, match="ended"):
        link.put_nowait(audio(2))
    assert [type(link.get_nowait()).__name__ for _ in range(3)] == ["Audio", "Audio", "EndOfStream"]


async def test_flush_drops_data_keeps_control_and_frees_producers() -> None:
    link = Link(1, Overflow.BLOCK)
    link.put_nowait(audio(0))
    link.put_nowait(Interrupt())
    waiter = asyncio.create_task(link.put(audio(1)))
    await asyncio.sleep(0)
    assert link.flush() == 1
    await asyncio.wait_for(waiter, 1)
    assert type(link.get_nowait()) is Interrupt
    assert link.get_nowait().pts == 320  # type: ignore[union-attr]
    assert link.flushed == 1


async def test_get_wakes_on_put_and_close() -> None:
    link = Link(2)
    getter = asyncio.create_task(link.get())
    await asyncio.sleep(0)
    link.put_nowait(audio(5))
    assert (await asyncio.wait_for(getter, 1)).pts == 5 * 320  # type: ignore[union-attr]
    getter = asyncio.create_task(link.get())
    await asyncio.sleep(0)
    link.close()
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(getter, 1)
    with pytest.raises(LinkClosed):
        link.put_nowait(audio(0))
