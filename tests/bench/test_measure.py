"""The harness's own measurement against a service whose delays are known: the
synthetic ``delay`` agent answers each utterance exactly 300 ms after it ended
and stops a reply 200 ms into the caller talking over it. Over every transport
the harness supports, it must report those delays within one frame (20 ms).

Medians are asserted, not single turns: the machine is shared, and one late
wake-up of the event loop is the machine's, not the harness's."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from voxline.bench.run import Options, bench
from voxline.bench.script import synthetic_script
from voxline.bench.service import describe, embedded

FRAME_MS = 20.0
WINDOW_MS = 2.5  # the energy window: where an onset is placed, within it
DELAY = 0.3
BARGEIN = 0.2
CLEARS = {"inprocess", "raw", "twilio"}  # transports with a clear message (AudioSocket and SIP have none)


async def run(transport: str, delay: float = DELAY, turns: int = 6, calls: int = 1, **kw: Any) -> dict[str, Any]:
    async with embedded(overrides={"agent": "delay", "vad": "webrtc"}, delay=delay, bargein=BARGEIN) as target:
        opts = Options(transport=transport, calls=calls, turns=turns, agent="delay", progress=False, **kw)
        return await bench(opts, target, synthetic_script(turns), await describe(target))


def within_a_frame(measured: float | None, expected_ms: float) -> bool:
    return measured is not None and expected_ms - WINDOW_MS <= measured <= expected_ms + FRAME_MS


def stopped_within_a_frame(measured: float | None, expected_ms: float) -> bool:
    """The reply stops at the interrupt plus the frame already on the wire: up to
    one frame later, plus the resampler's 2 ms on an 8 kHz wire."""
    return measured is not None and expected_ms - WINDOW_MS <= measured <= expected_ms + FRAME_MS + 5


@pytest.mark.parametrize("transport", ["inprocess", "raw", "twilio", "audiosocket", "sip"])
async def test_the_injected_delay_is_measured_within_a_frame(transport: str) -> None:
    result = await run(transport)
    rows = result["rows"]
    assert result["errors"] == [] and result["turns"] == 6 and result["answered"] == 6
    assert result["transport"] == transport
    v2v = [r["v2v_ms"] for r in rows]
    assert within_a_frame(statistics.median(v2v), DELAY * 1000), v2v
    assert within_a_frame(result["v2v"]["p50_ms"], DELAY * 1000)

    barged = [r["bargein"] for r in rows if r["kind"] == "bargein"]
    assert len(barged) == 2 and all(b["talked_over"] and b["stopped"] and b["answered"] for b in barged), barged
    assert stopped_within_a_frame(statistics.median(b["stop_ms"] for b in barged), BARGEIN * 1000), barged
    assert within_a_frame(statistics.median(b["answer_v2v_ms"] for b in barged), DELAY * 1000), barged
    if transport in CLEARS:
        assert within_a_frame(statistics.median(b["clear_ms"] for b in barged), BARGEIN * 1000), barged
    else:
        assert all(b["clear_ms"] is None for b in barged)

    coughs = [r["cough"] for r in rows if r["kind"] == "cough"]
    assert len(coughs) == 2 and all(c["over_reply"] and c["continued"] for c in coughs), coughs
    assert result["cough"] == {"n": 2, "continued": 2}

    # The service's own marks, joined to each turn: its speech end where the
    # caller's was, its first frame out where the caller heard the reply.
    joined = [r for r in rows if "stages_ms" in r]
    assert len(joined) >= 5, rows
    for r in joined:
        assert abs(r["stages_ms"]["speech_end"]) <= FRAME_MS
        assert -WINDOW_MS <= r["v2v_ms"] - r["stages_ms"]["first_played"] <= FRAME_MS
    assert result["stages"]["budget_ms"]["stages"]["agent"] == DELAY * 1000


@pytest.mark.slow
async def test_webrtc_reports_the_injected_delay_within_a_frame() -> None:
    """Over WebRTC the wire itself holds audio (aiortc's receivers prefetch four
    packets each way, Opus adds its own): the harness must see exactly the
    injected difference between two services that differ only in their delay."""
    short = await run("webrtc", delay=DELAY, turns=6)
    long = await run("webrtc", delay=2 * DELAY, turns=6)
    for result in (short, long):
        assert result["errors"] == [] and result["answered"] == 6, result["rows"]
    diff = long["v2v"]["p50_ms"] - short["v2v"]["p50_ms"]
    assert abs(diff - DELAY * 1000) <= FRAME_MS, (short["v2v"], long["v2v"])
    barged = [r["bargein"] for r in short["rows"] if r["kind"] == "bargein"]
    assert barged and all(b["stopped"] and b["answered"] for b in barged)
    wire = short["v2v"]["p50_ms"] - DELAY * 1000  # what the WebRTC path adds, both ways
    # The stop is heard through the same wire: the interrupt, the frame in flight, the path out.
    stop = statistics.median(b["stop_ms"] for b in barged)
    assert abs(stop - BARGEIN * 1000 - wire) <= 2 * FRAME_MS + 5, (barged, wire)


async def test_several_callers_at_once_each_measure_the_delay() -> None:
    result = await run("raw", calls=3, turns=3)
    assert result["errors"] == [] and result["answered"] == 9
    assert {r["call"] for r in result["rows"]} == {0, 1, 2}
    assert within_a_frame(result["v2v"]["p50_ms"], DELAY * 1000)
