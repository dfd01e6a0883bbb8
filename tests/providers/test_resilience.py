"""Circuit breaker, health score and fallback chains: on a fake clock, and against local vendors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest

from voxline.media.clock import FakeClock
from voxline.providers.base import (
    PCM,
    Deadlines,
    LanguageModel,
    Message,
    ProviderError,
    ProviderTimeout,
    Recognition,
    SpeechToText,
    TextToSpeech,
    Transcription,
)
from voxline.providers.llm.openai_compat import OpenAICompatLLM
from voxline.providers.resilience import (
    AllProvidersFailed,
    BreakerState,
    ChainConfig,
    CircuitBreaker,
    FallbackChain,
    FallbackLLM,
    FallbackSTT,
    FallbackTTS,
    HealthScore,
    StreamInterrupted,
)
from voxline.providers.stt.deepgram import DeepgramSTT
from voxline.providers.tts.deepgram_tts import DeepgramTTS
from voxline.providers.tts.elevenlabs import ElevenLabsTTS

from .fake_vendors import WORDS, Behaviour, FakeVendors

D = Deadlines(connect=1.0, first_result=2.0, idle=1.0, total=20.0)
MSGS: list[Message] = [{"role": "user", "content": "hi"}]
HANG = object()  # a step that never completes: a hung vendor

# Every test here must leave no task behind (readers, keep-alives, abandoned calls).
pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


class ScriptLLM:
    """An in-process LanguageModel that plays a script: text, exceptions, or HANG."""

    def __init__(self, name: str, *script: object) -> None:
        self.name = name
        self.script = script
        self.calls = 0
        self.closed = 0

    async def stream(self, messages: Sequence[Message], deadlines: Deadlines | None = None) -> AsyncIterator[str]:
        self.calls += 1
        try:
            for step in self.script:
                if step is HANG:
                    await asyncio.get_running_loop().create_future()
                elif isinstance(step, BaseException):
                    raise step
                else:
                    yield str(step)
        finally:
            self.closed += 1


def ok(name: str) -> ScriptLLM:
    return ScriptLLM(name, "a", "b")


def err(name: str) -> ProviderError:
    return ProviderError(name, "boom")


async def run(it: AsyncIterator[Any], into: list[Any] | None = None) -> list[Any]:
    out = [] if into is None else into
    async for x in it:
        out.append(x)
    return out


# -- breaker ------------------------------------------------------------------------


def state(b: CircuitBreaker) -> BreakerState:
    return b.state  # a call, so that mypy does not narrow the property between asserts


async def test_breaker_lifecycle_on_fake_clock() -> None:
    clock = FakeClock()
    b = CircuitBreaker(clock)
    b.record_failure()
    b.record_failure()
    assert state(b) is BreakerState.CLOSED and b.allow()
    b.record_failure()
    assert b.snapshot()["state"] == "open" and not b.allow()
    await clock.advance(29.9)
    assert b.snapshot()["state"] == "open" and not b.allow()
    await clock.advance(0.1)
    assert state(b) is BreakerState.HALF_OPEN
    assert b.allow()  # the one trial
    assert not b.allow()  # no second call while the trial is out
    b.record_failure()  # the trial failed: open again, for another 30 s from now
    assert state(b) is BreakerState.OPEN and b.snapshot()["opened_at"] == 30.0
    await clock.advance(30.0)
    assert b.allow()
    b.record_success()
    assert state(b) is BreakerState.CLOSED
    assert b.snapshot() == {"state": "closed", "consecutive_failures": 0, "opened_at": 30.0, "opened_count": 2}


def test_breaker_counts_consecutive_failures_only() -> None:
    b = CircuitBreaker(FakeClock())
    for _ in range(2):
        b.record_failure()
    b.record_success()
    for _ in range(2):
        b.record_failure()
    assert state(b) is BreakerState.CLOSED


async def test_breaker_release_frees_the_trial() -> None:
    clock = FakeClock()
    b = CircuitBreaker(clock, failure_threshold=1, reset_timeout=5.0)
    b.record_failure()
    await clock.advance(5.0)
    assert b.allow() and not b.allow()
    b.release()  # the trial was cancelled before it proved anything
    assert state(b) is BreakerState.HALF_OPEN and b.allow()


# -- health -------------------------------------------------------------------------


async def test_health_score_bands_latency_and_recovery() -> None:
    clock = FakeClock()
    h = HealthScore(clock)
    assert (h.score, h.status) == (100.0, "healthy")
    h.record(False)
    assert (h.score, h.status) == (70.0, "healthy")  # one failure is forgiven
    h.record(False)
    assert (h.score, h.status) == (49.0, "degraded")
    h.record(False)
    assert (h.score, h.status) == (34.3, "unhealthy")
    await clock.advance(60.0)  # one half-life unused: the deficit halves
    assert h.score == pytest.approx(100 - 65.7 / 2, abs=0.1)
    slow = HealthScore(clock)
    slow.record(True, latency=3.0)  # at bad_latency: half the score, but never skipped
    assert (slow.score, slow.status) == (50.0, "degraded")
    fast = HealthScore(clock)
    fast.record(True, latency=0.2)
    assert fast.score == 100.0 and fast.latency == 0.2


async def test_chain_order_bands_and_open_breakers() -> None:
    clock = FakeClock()
    a, b, c, d = ok("a"), ok("b"), ok("c"), ok("d")
    chain: FallbackChain[ScriptLLM] = FallbackChain([a, b, c, d], name="t", clock=clock,
                                                    config=ChainConfig(failure_threshold=10))
    assert [m.name for m in chain.order()] == ["a", "b", "c", "d"]
    ma, mb, mc, md = chain.members
    ma.failed(err("a"), weight=3)  # unhealthy
    mb.failed(err("b"), weight=2)  # degraded (49)
    mc.failed(err("c"))  # 70: still healthy, keeps its place
    assert [m.name for m in chain.order()] == ["c", "d", "b", "a"]
    for _ in range(10):
        md.breaker.record_failure()
    assert [m.name for m in chain.order()] == ["c", "b", "a"]


# -- FallbackLLM on a fake clock -----------------------------------------------------


async def test_failure_before_first_token_falls_through() -> None:
    a, b = ScriptLLM("a", err("a")), ok("b")
    llm = FallbackLLM([a, b], clock=FakeClock(), deadlines=D)
    assert isinstance(llm, LanguageModel)
    assert await run(llm.stream(MSGS)) == ["a", "b"]
    state = {s["name"]: s for s in llm.state()}
    assert state["a"]["failures"] == 1 and state["a"]["last_error"] == "ProviderError: a: boom"
    assert state["b"]["successes"] == 1 and state["b"]["requests"] == 1
    orjson.dumps(llm.state())  # plain data, ready for metrics


async def test_failure_after_first_token_ends_the_stream_without_splicing() -> None:
    a, b = ScriptLLM("a", "half", ProviderError("a", "reset", retryable=True)), ok("b")
    llm = FallbackLLM([a, b], clock=FakeClock(), deadlines=D)
    got: list[str] = []
    with pytest.raises(StreamInterrupted) as e:
        await run(llm.stream(MSGS), got)
    assert got == ["half"]
    assert b.calls == 0  # never restarted elsewhere
    assert isinstance(e.value, ProviderError) and e.value.retryable
    assert a.closed == 1
    # The lost turn demotes a: the next turn starts on b.
    assert await run(llm.stream(MSGS)) == ["a", "b"]
    assert (a.calls, b.calls) == (1, 1)


async def test_all_failing_raises_all_providers_failed() -> None:
    llm = FallbackLLM([ScriptLLM("a", err("a")), ScriptLLM("b", RuntimeError("bug"))], clock=FakeClock(), deadlines=D)
    with pytest.raises(AllProvidersFailed) as e:
        await run(llm.stream(MSGS))
    assert [name for name, _ in e.value.errors] == ["a", "b"]
    assert "RuntimeError: bug" in str(e.value)


async def test_hung_provider_is_abandoned_at_first_result_deadline() -> None:
    clock = FakeClock()
    a, b = ScriptLLM("a", HANG), ok("b")
    llm = FallbackLLM([a, b], clock=clock, deadlines=D)
    task = asyncio.create_task(run(llm.stream(MSGS)))
    await clock.advance(D.connect + D.first_result - 0.01)
    assert not task.done() and b.calls == 0
    await clock.advance(0.01)
    assert await asyncio.wait_for(task, 1.0) == ["a", "b"]
    assert a.closed == 1  # the hung call was cancelled and cleaned up
    assert llm.state()[0]["timeouts"] == 1


async def test_hang_after_first_token_hits_idle_deadline() -> None:
    clock = FakeClock()
    llm = FallbackLLM([ScriptLLM("a", "x", HANG), ok("b")], clock=clock, deadlines=D)
    got: list[str] = []
    task = asyncio.create_task(run(llm.stream(MSGS), got))
    await clock.advance(D.idle)
    with pytest.raises(StreamInterrupted) as e:
        await asyncio.wait_for(task, 1.0)
    assert got == ["x"]
    assert isinstance(e.value.cause, ProviderTimeout) and e.value.cause.phase == "data (idle)"


async def test_total_deadline_from_outside() -> None:
    clock = FakeClock()
    d = Deadlines(connect=1.0, first_result=1.0, idle=100.0, total=5.0)
    llm = FallbackLLM([ScriptLLM("a", "x", HANG)], clock=clock, deadlines=d)
    task = asyncio.create_task(run(llm.stream(MSGS)))
    await clock.advance(5.0)
    with pytest.raises(StreamInterrupted) as e:
        await asyncio.wait_for(task, 1.0)
    assert isinstance(e.value.cause, ProviderTimeout) and e.value.cause.phase == "completion (total)"


async def test_open_breaker_is_skipped_then_half_open_trial() -> None:
    clock = FakeClock()
    a = ScriptLLM("a", err("a"))
    llm = FallbackLLM([a], clock=clock, deadlines=D)
    for _ in range(3):
        with pytest.raises(AllProvidersFailed):
            await run(llm.stream(MSGS))
    assert a.calls == 3 and llm.state()[0]["breaker"]["state"] == "open"
    with pytest.raises(AllProvidersFailed, match="none available") as e:
        await run(llm.stream(MSGS))
    assert a.calls == 3 and e.value.errors == []  # skipped while open: no call at all
    await clock.advance(29.0)
    with pytest.raises(AllProvidersFailed):
        await run(llm.stream(MSGS))
    assert a.calls == 3
    await clock.advance(1.0)
    assert llm.state()[0]["breaker"]["state"] == "half_open"
    a.script = ("a1",)  # recovered: the trial call succeeds and closes the breaker
    assert await run(llm.stream(MSGS)) == ["a1"]
    assert llm.state()[0]["breaker"]["state"] == "closed"


async def test_failed_trial_reopens_for_another_reset_timeout() -> None:
    clock = FakeClock()
    a = ScriptLLM("a", err("a"))
    llm = FallbackLLM([a], clock=clock, deadlines=D)
    for _ in range(3):
        with pytest.raises(AllProvidersFailed):
            await run(llm.stream(MSGS))
    await clock.advance(30.0)
    with pytest.raises(AllProvidersFailed):
        await run(llm.stream(MSGS))  # the trial, failing
    assert a.calls == 4 and llm.state()[0]["breaker"]["state"] == "open"
    await clock.advance(29.0)
    with pytest.raises(AllProvidersFailed):
        await run(llm.stream(MSGS))
    assert a.calls == 4


async def test_half_open_admits_one_trial_at_a_time() -> None:
    clock = FakeClock()
    a, b = ScriptLLM("a", "t", HANG), ScriptLLM("b", err("b"))
    llm = FallbackLLM([a, b], clock=clock, deadlines=D)
    for _ in range(3):
        llm.chain.members[0].breaker.record_failure()
    await clock.advance(30.0)
    first = llm.stream(MSGS)
    assert await first.__anext__() == "t"  # the trial call is out, on a
    with pytest.raises(AllProvidersFailed) as e:  # a is not admitted twice; b fails
        await run(llm.stream(MSGS))
    assert [name for name, _ in e.value.errors] == ["b"] and a.calls == 1
    await first.aclose()  # type: ignore[attr-defined]
    assert llm.state()[0]["breaker"]["state"] == "closed"  # it did answer


async def test_consumer_cancel_closes_provider_and_is_no_failure() -> None:
    a = ScriptLLM("a", "x", HANG)
    llm = FallbackLLM([a], clock=FakeClock(), deadlines=D)
    it = llm.stream(MSGS)
    assert await it.__anext__() == "x"
    await it.aclose()  # type: ignore[attr-defined]  # barge-in
    assert a.closed == 1
    s = llm.state()[0]
    assert (s["failures"], s["successes"]) == (0, 1)


async def test_cancel_before_first_result_gives_no_verdict() -> None:
    clock = FakeClock()
    a = ScriptLLM("a", HANG)
    llm = FallbackLLM([a], clock=clock, deadlines=D)
    task = asyncio.create_task(run(llm.stream(MSGS)))
    await clock.settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    s = llm.state()[0]
    assert (s["failures"], s["successes"], a.closed) == (0, 0, 1)


async def test_unhealthy_provider_is_a_last_resort() -> None:
    a, b = ScriptLLM("a", err("a")), ScriptLLM("b", err("b"))
    llm = FallbackLLM([a, b], clock=FakeClock(), deadlines=D, config=ChainConfig(failure_threshold=10))
    for _ in range(3):
        with pytest.raises(AllProvidersFailed):
            await run(llm.stream(MSGS))
    a.script = ("from a",)
    b.script = ("from b",)
    llm.chain.members[1].health.record(True)  # b recovers a little: above a now
    assert [m.name for m in llm.chain.order()] == ["b", "a"]
    b.script = (err("b"),)
    assert await run(llm.stream(MSGS)) == ["from a"]  # tried when nothing else is left


async def test_empty_stream_is_a_success() -> None:
    a, b = ScriptLLM("a"), ok("b")
    llm = FallbackLLM([a, b], clock=FakeClock(), deadlines=D)
    assert await run(llm.stream(MSGS)) == []
    assert b.calls == 0 and llm.state()[0]["successes"] == 1


def test_chain_needs_providers() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FallbackLLM([])
    with pytest.raises(ValueError, match="at least one"):
        FallbackSTT([])


def test_chains_can_be_built_before_the_loop_runs() -> None:
    llm = FallbackLLM([ok("a")])  # default LoopClock, no running loop here
    assert llm.state()[0]["health"]["score"] == 100.0


# -- FallbackTTS ---------------------------------------------------------------------


class ToneTTS:
    def __init__(self, name: str, rate: int, *, fail: bool = False) -> None:
        self.name = name
        self.sample_rate = rate
        self.fail = fail

    async def synthesize(self, text: str, deadlines: Deadlines | None = None) -> AsyncIterator[PCM]:
        if self.fail:
            raise ProviderError(self.name, "down")
        t = np.arange(self.sample_rate) / self.sample_rate  # one second
        pcm = (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16)
        for i in range(0, pcm.size, self.sample_rate // 50):
            yield pcm[i:i + self.sample_rate // 50]


async def test_tts_fallback_resamples_to_the_chain_rate() -> None:
    tts = FallbackTTS([ToneTTS("a", 24000, fail=True), ToneTTS("b", 16000)], clock=FakeClock(), deadlines=D)
    assert isinstance(tts, TextToSpeech) and tts.sample_rate == 24000
    out = np.concatenate(await run(tts.synthesize("hi")))
    assert out.dtype == np.int16
    assert abs(out.size - 24000) < 100  # one second at 24 kHz, give or take filter delay
    # Still a 300 Hz tone: zero crossings per second ~ 600.
    crossings = np.count_nonzero(np.diff(np.signbit(out[200:-200])))
    assert 590 <= crossings * 24000 / (out.size - 400) <= 610


async def test_tts_same_rate_passes_through() -> None:
    tts = FallbackTTS([ToneTTS("a", 16000)], clock=FakeClock(), deadlines=D)
    chunks = await run(tts.synthesize("hi"))
    assert len(chunks) == 50 and sum(c.size for c in chunks) == 16000


# -- FallbackSTT ---------------------------------------------------------------------


class ScriptRecognition:
    def __init__(self, owner: ScriptSTT) -> None:
        self.owner = owner
        self.samples = 0
        self.queue: asyncio.Queue[Transcription | BaseException] = asyncio.Queue(maxsize=16)
        self.closed = False

    async def send(self, pcm: PCM) -> None:
        if self.owner.fail_send_after is not None and self.samples >= self.owner.fail_send_after:
            raise ProviderError(self.owner.name, "send failed")
        self.samples += pcm.size
        self.owner.received += pcm.size

    async def finalize(self) -> None:
        self.owner.finalized += 1
        await self.queue.put(Transcription(f"{self.owner.name}:{self.samples}", True))
        if self.owner.fail_after_final:
            await self.queue.put(ProviderError(self.owner.name, "died"))

    async def _results(self) -> AsyncIterator[Transcription]:
        while not self.closed:
            item = await asyncio.wait_for(self.queue.get(), 5.0)
            if isinstance(item, BaseException):
                raise item
            yield item

    def results(self) -> AsyncIterator[Transcription]:
        return self._results()

    async def aclose(self) -> None:
        self.closed = True


class ScriptSTT:
    sample_rate = 16000

    def __init__(self, name: str, *, fail_open: bool = False, fail_send_after: int | None = None,
                 fail_after_final: bool = False) -> None:
        self.name = name
        self.fail_open = fail_open
        self.fail_send_after = fail_send_after
        self.fail_after_final = fail_after_final
        self.received = 0
        self.finalized = 0
        self.opened = 0

    async def open(self, deadlines: Deadlines | None = None) -> Recognition:
        self.opened += 1
        if self.fail_open:
            raise ProviderError(self.name, "refused")
        return ScriptRecognition(self)


FRAME = np.zeros(320, dtype=np.int16)


async def test_stt_open_fails_over() -> None:
    a, b = ScriptSTT("a", fail_open=True), ScriptSTT("b")
    stt = FallbackSTT([a, b], clock=FakeClock(), deadlines=D)
    assert isinstance(stt, SpeechToText)
    rec = await stt.open()
    await rec.send(FRAME)
    assert (a.received, b.received) == (0, 320)
    await rec.aclose()


async def test_stt_failure_before_first_result_replays_audio_elsewhere() -> None:
    a, b = ScriptSTT("a", fail_send_after=640), ScriptSTT("b")
    stt = FallbackSTT([a, b], clock=FakeClock(), deadlines=D)
    rec = await stt.open()
    for _ in range(5):
        await rec.send(FRAME)  # the third send fails on a: b gets all five frames
    await rec.finalize()
    it = rec.results()
    assert await asyncio.wait_for(it.__anext__(), 1.0) == Transcription("b:1600", True)
    assert b.received == 1600 and stt.state()[0]["failures"] == 1
    await rec.aclose()


async def test_stt_failure_after_a_result_interrupts() -> None:
    a, b = ScriptSTT("a", fail_after_final=True), ScriptSTT("b")
    stt = FallbackSTT([a, b], clock=FakeClock(), deadlines=D)
    rec = await stt.open()
    await rec.send(FRAME)
    await rec.finalize()
    got: list[Transcription] = []
    with pytest.raises(StreamInterrupted):
        await run(rec.results(), got)
    assert got == [Transcription("a:320", True)]
    assert b.opened == 0
    with pytest.raises(StreamInterrupted):
        await rec.send(FRAME)
    # The agent opens anew: a was demoted, so b serves the next turn.
    rec2 = await stt.open()
    await rec2.send(FRAME)
    assert b.received == 320
    await rec2.aclose()


async def test_stt_replay_buffer_is_bounded() -> None:
    a, b = ScriptSTT("a", fail_send_after=16000), ScriptSTT("b")
    stt = FallbackSTT([a, b], clock=FakeClock(), deadlines=D, config=ChainConfig(replay_seconds=0.5))
    rec = await stt.open()
    for _ in range(60):  # 1.2 s of audio; a fails on the 51st frame
        await rec.send(FRAME)
    # b gets the last 0.5 s kept for replay, then the 9 frames sent after the failover.
    assert b.received == 8000 + 9 * 320
    # Kept until a first result, newest 0.5 s only (it would serve a second failover).
    assert rec.replay_dropped == 60 * 320 - 8000  # type: ignore[attr-defined]
    await rec.aclose()


def test_stt_chain_refuses_mixed_rates() -> None:  # no event loop: built from configuration
    other = ScriptSTT("b")
    other.sample_rate = 8000
    with pytest.raises(ValueError, match="different rates"):
        FallbackSTT([ScriptSTT("a"), other])


# -- against local vendor servers: a provider killed mid-turn costs one turn ----------


@pytest.fixture
async def two_vendors() -> AsyncIterator[tuple[FakeVendors, FakeVendors]]:
    a, b = FakeVendors(), FakeVendors()
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    s = aiohttp.ClientSession()
    yield s
    await s.close()


REAL = Deadlines(connect=1.0, first_result=2.0, idle=2.0, total=10.0)


@pytest.mark.parametrize("afterwards", ["killed", "recovered"])
async def test_llm_killed_mid_turn_costs_one_turn(two_vendors: tuple[FakeVendors, FakeVendors],
                                                  session: aiohttp.ClientSession, afterwards: str) -> None:
    primary, secondary = two_vendors
    llm = FallbackLLM(
        [OpenAICompatLLM(v.url("/v1"), "k", "m", name=n, session=session) for v, n in
         ((primary, "primary"), (secondary, "secondary"))],
        deadlines=REAL,
    )
    primary.set("chat", Behaviour.DROP)
    got: list[str] = []
    with pytest.raises(StreamInterrupted):
        await run(llm.stream(MSGS), got)
    assert got == WORDS[:2]  # turn 1 is lost after two tokens, and not spliced
    assert secondary.requests == []
    if afterwards == "killed":
        await primary.close()
    else:
        primary.set("chat", Behaviour.NORMAL)
    assert await run(llm.stream(MSGS)) == WORDS  # turn 2 is whole
    assert len(secondary.requests) == 1


async def test_tts_server_error_falls_through_to_other_vendor(two_vendors: tuple[FakeVendors, FakeVendors],
                                                             session: aiohttp.ClientSession) -> None:
    primary, secondary = two_vendors
    primary.set("elevenlabs", Behaviour.HTTP_500)
    tts = FallbackTTS(
        [ElevenLabsTTS("k", "voice", base_url=primary.url(), sample_rate=16000, session=session),
         DeepgramTTS("k", base_url=secondary.url(), sample_rate=8000, session=session)],
        deadlines=REAL,
    )
    out = np.concatenate(await run(tts.synthesize("Hello.")))
    assert tts.sample_rate == 16000
    assert abs(out.size - 4000) < 100  # 0.25 s from Deepgram at 8 kHz, resampled to 16 kHz
    assert len(primary.requests) == 1 and len(secondary.requests) == 1


async def test_stt_dropped_before_results_fails_over_with_replay(two_vendors: tuple[FakeVendors, FakeVendors],
                                                                session: aiohttp.ClientSession) -> None:
    primary, secondary = two_vendors
    primary.set("listen", Behaviour.DROP)
    stt = FallbackSTT(
        [DeepgramSTT("k", v.ws_url(), name=n, session=session) for v, n in
         ((primary, "primary"), (secondary, "secondary"))],
        deadlines=REAL,
    )
    rec = await stt.open()
    half = np.zeros(8000, dtype=np.int16)
    results = rec.results()

    async def next_result() -> Transcription:
        return await results.__anext__()

    first = asyncio.create_task(next_result())
    await rec.send(half)  # primary drops the connection on this audio
    await asyncio.sleep(0.05)  # let the drop arrive (the send itself may still succeed)
    await rec.send(half)
    await rec.finalize()
    seen = [await asyncio.wait_for(first, 2.0)]
    while not seen[-1].final:
        seen.append(await asyncio.wait_for(results.__anext__(), 2.0))
    assert seen[-1].text == "hello world"  # both half-seconds, via the secondary
    assert secondary.audio_bytes == 2 * half.nbytes
    await results.aclose()  # type: ignore[attr-defined]
    await rec.aclose()
