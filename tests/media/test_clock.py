import asyncio

from voxline.media.clock import FakeClock, LoopClock


async def test_fake_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = FakeClock(10.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, t: float) -> None:
        await clock.sleep_until(t)
        woke.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper(n, t)) for n, t in (("c", 10.3), ("a", 10.1), ("b", 10.2))]
    await clock.advance(0.15)
    assert woke == [("a", 10.1)]
    await clock.advance(1.0)
    assert woke == [("a", 10.1), ("b", 10.2), ("c", 10.3)]
    assert clock.now() == 11.15
    await asyncio.gather(*tasks)


async def test_fake_clock_past_deadline_returns_at_once() -> None:
    clock = FakeClock(5.0)
    await asyncio.wait_for(clock.sleep_until(4.0), 0.5)
    assert clock.pending == 0


async def test_loop_clock_sleeps_until_deadline() -> None:
    clock = LoopClock()
    t = clock.now() + 0.01
    await clock.sleep_until(t)
    assert clock.now() >= t
