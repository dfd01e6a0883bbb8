"""Provider requests, failures, first-result time and breaker state reach /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from voxline.control.metrics import Metrics
from voxline.control.session import SessionRegistry
from voxline.media.clock import LoopClock
from voxline.providers.base import Deadlines, Message, ProviderError
from voxline.providers.factory import Providers
from voxline.providers.resilience import FallbackLLM

from ..agent.fakes import FakeLLM, FakeSTT, FakeTTS


class DeadLLM:
    name = "dead-llm"

    async def stream(self, messages: Sequence[Message], deadlines: Deadlines | None = None) -> AsyncIterator[str]:
        raise ProviderError(self.name, "connection refused")
        yield ""  # pragma: no cover


def sample(text: str, name: str, labels: str) -> float:
    want = set(labels.split(","))
    for line in text.splitlines():
        if line.startswith(f"{name}{{"):
            have = set(line[len(name) + 1 : line.index("}")].split(","))
            if have == want:
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{labels}}} not in the exposition")


async def test_provider_counters_and_breaker_states_are_exported() -> None:
    clock = LoopClock()
    chain = FallbackLLM([DeadLLM(), FakeLLM(clock, "fine thanks", first=0.0)], name="llm")
    providers = Providers(FakeSTT(clock, ("hello",), delay=0.0), chain, FakeTTS(clock),
                          FakeTTS(clock, "offline")).metered()
    for _ in range(3):  # the dead member fails twice, then health routes around it
        assert "".join([p async for p in providers.llm.stream([{"role": "user", "content": "hi"}])]) == "fine thanks"
    chunks = [c async for c in providers.tts.synthesize("two words")]
    assert sum(len(c) for c in chunks) == 8000
    rec = await providers.stt.open()
    await rec.send(np.zeros(1600, np.int16))
    await rec.finalize()
    results = rec.results()
    assert (await anext(results)).text == "hello"
    await rec.aclose()

    metrics = Metrics(SessionRegistry(1))
    metrics.watch_providers(providers.stats)
    text = metrics.render().decode()
    assert sample(text, "voxline_provider_requests_total", 'provider="llm",kind="llm"') == 3
    assert sample(text, "voxline_provider_failures_total", 'provider="llm",kind="llm"') == 0
    assert sample(text, "voxline_provider_first_results_total", 'provider="fake-tts",kind="tts"') == 1
    assert sample(text, "voxline_provider_requests_total", 'provider="fake-stt",kind="stt"') == 1
    assert sample(text, "voxline_provider_breaker_state", 'chain="llm",provider="dead-llm"') == 0.0
    assert sample(text, "voxline_provider_breaker_state", 'chain="llm",provider="fake-llm"') == 0.0
    dead = next(m for m in providers.stats()[1]["members"] if m["name"] == "dead-llm")
    assert dead["failures"] == 2 and dead["health"]["score"] < 70  # degraded: tried last
    # The chain answered every time; its failing member shows in its own series.
    assert sample(text, "voxline_provider_member_failures_total", 'chain="llm",provider="dead-llm"') == 2
    assert sample(text, "voxline_provider_member_requests_total", 'chain="llm",provider="fake-llm"') == 3
    assert sample(text, "voxline_provider_health", 'chain="llm",provider="dead-llm"') < 70
    assert sample(text, "voxline_provider_health", 'chain="llm",provider="fake-llm"') >= 70


async def test_an_open_breaker_shows_as_open() -> None:
    clock = LoopClock()
    chain = FallbackLLM([DeadLLM()], name="solo")
    providers = Providers(FakeSTT(clock), chain, FakeTTS(clock), FakeTTS(clock, "offline")).metered()
    for _ in range(3):  # alone, it is tried each time: three failures open its breaker
        with pytest.raises(ProviderError):
            async for _ in providers.llm.stream([{"role": "user", "content": "hi"}]):
                pass
    metrics = Metrics(SessionRegistry(1))
    metrics.watch_providers(providers.stats)
    text = metrics.render().decode()
    assert sample(text, "voxline_provider_breaker_state", 'chain="solo",provider="dead-llm"') == 1.0
    assert sample(text, "voxline_provider_failures_total", 'provider="solo",kind="llm"') == 3


async def test_a_failing_provider_counts_as_a_failure() -> None:
    clock = LoopClock()
    tts = FakeTTS(clock)
    tts.fail = True
    providers = Providers(FakeSTT(clock), FakeLLM(clock, "x"), tts, FakeTTS(clock, "offline")).metered()
    with pytest.raises(ProviderError):
        async for _ in providers.tts.synthesize("hello"):
            pass
    row = next(r for r in providers.stats() if r["kind"] == "tts" and r["provider"] == "fake-tts")
    assert (row["requests"], row["failures"], row["first_result_count"]) == (1, 1, 0)
