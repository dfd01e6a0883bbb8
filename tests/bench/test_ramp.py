"""The capacity ramp finds the knee: as many callers as held, stopping where
admission refuses."""

from __future__ import annotations

from voxline.bench.run import Options, bench
from voxline.bench.script import synthetic_script
from voxline.bench.service import describe, embedded


async def test_the_knee_is_where_admission_starts_refusing() -> None:
    async with embedded(overrides={"agent": "delay", "vad": "webrtc", "max_sessions": 2}) as target:
        opts = Options(transport="raw", calls=1, turns=1, agent="delay", progress=False, ramp=True, max_calls=8,
                       stagger=0.05)
        result = await bench(opts, target, synthetic_script(1, bargein=False), await describe(target))
    cap = result["capacity"]
    assert cap["knee"] == 2 and cap["first_failed"] == 3, cap
    assert "refused" in cap["reason"]
    assert [lv["calls"] for lv in cap["levels"]] == [1, 2, 3, 4]
    assert [lv["held"] for lv in cap["levels"]] == [True, True, False, False]
