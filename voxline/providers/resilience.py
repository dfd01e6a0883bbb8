"""Resilience: circuit breakers, health scores and fallback chains of providers.

``FallbackLLM``, ``FallbackTTS`` and ``FallbackSTT`` wrap providers of one kind and
honour the same contract. Per call they try providers in order of health, skip
open breakers, and enforce the ``Deadlines`` from outside on the injected clock
(connect + first result, idle between results, total), so a hung provider is
abandoned at its deadline however it hangs.

**Where failover stops.** A failure *before* the first result falls through to the
next provider: the caller has heard nothing yet. A failure *after* results were
yielded ends the stream with ``StreamInterrupted``: the answer is never restarted
elsewhere, since the caller heard its first half and a second provider would
repeat it or answer differently (a splice). The agent knows what was played and
decides what to say; the failure counts double in health, so the next turn goes
to a healthy alternative: killing a provider mid-turn costs that turn at most.
When every provider fails, ``AllProvidersFailed`` (the agent apologises in the
offline voice). STT is session-long: ``FallbackSTT.open()`` fails over at connect,
and an open recognition that fails *before its first result* reopens on the next
provider and replays the audio it kept (bounded, oldest dropped); after a result,
it ends with ``StreamInterrupted`` and the agent opens a new one.

Breakers and health scores are in ``health`` (re-exported here): a provider is
skipped while its breaker is open; healthy ones (≥ 70) are tried in configured
order, degraded ones (40-70) after them by score, unhealthy ones (< 40) last,
only when nothing else is left in the call.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from ..media.clock import Clock, LoopClock
from ..media.resample import StreamResampler
from .base import (
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
from .health import BreakerState, CircuitBreaker, HealthConfig, HealthScore

__all__ = [
    # re-exported from .health, so the resilience layer is one import
    "BreakerState",
    "CircuitBreaker",
    "HealthConfig",
    "HealthScore",
    "ChainConfig",
    "AllProvidersFailed",
    "StreamInterrupted",
    "FallbackChain",
    "FallbackLLM",
    "FallbackTTS",
    "FallbackSTT",
]

log = logging.getLogger(__name__)

P = TypeVar("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChainConfig:
    """How a chain judges its providers (one per chain, built from configuration)."""

    failure_threshold: int = 3
    reset_timeout: float = 30.0
    health: HealthConfig = HealthConfig()
    replay_seconds: float = 10.0  # STT: audio kept for replay until a first result


class AllProvidersFailed(ProviderError):
    """Every provider of a chain failed (or was unavailable) before a result."""

    def __init__(self, chain: str, errors: Sequence[tuple[str, BaseException]]) -> None:
        detail = "; ".join(f"{name}: {type(e).__name__}: {e}" for name, e in errors)
        super().__init__(chain, f"all providers failed ({detail or 'none available'})", retryable=False)
        self.errors = list(errors)


class StreamInterrupted(ProviderError):
    """A provider failed after its results began; what was yielded is all there is."""

    def __init__(self, provider: str, cause: BaseException) -> None:
        retryable = cause.retryable if isinstance(cause, ProviderError) else True
        super().__init__(provider, f"failed after output began: {cause}", retryable=retryable)
        self.cause = cause


class _Member(Generic[P]):
    def __init__(self, provider: P, index: int, clock: Clock, config: ChainConfig) -> None:
        self.provider = provider
        self.name: str = getattr(provider, "name", f"provider{index}")
        self.index = index
        self.breaker = CircuitBreaker(clock, failure_threshold=config.failure_threshold,
                                      reset_timeout=config.reset_timeout)
        self.health = HealthScore(clock, config.health)
        self.requests = self.successes = self.failures = self.timeouts = 0
        self.last_error: str | None = None

    def succeeded(self, latency: float | None) -> None:
        self.successes += 1
        self.breaker.record_success()
        self.health.record(True, latency)

    def failed(self, err: BaseException, *, weight: int = 1) -> None:
        self.failures += 1
        self.timeouts += isinstance(err, ProviderTimeout)
        self.last_error = f"{type(err).__name__}: {err}"[:300]
        self.breaker.record_failure()
        for _ in range(weight):
            self.health.record(False)
        log.warning("x %s failed: %s (breaker %s, health %.0f)", self.name, err,
                    self.breaker.state.value, self.health.score)

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "breaker": self.breaker.snapshot(), "health": self.health.snapshot(),
                "requests": self.requests, "successes": self.successes, "failures": self.failures,
                "timeouts": self.timeouts, "last_error": self.last_error}


async def _step(it: AsyncIterator[T]) -> T:
    return await it.__anext__()


class FallbackChain(Generic[P]):
    """Providers of one kind, each with a breaker and a health score."""

    def __init__(self, providers: Sequence[P], *, name: str, clock: Clock | None = None,
                 deadlines: Deadlines | None = None, config: ChainConfig | None = None) -> None:
        if not providers:
            raise ValueError(f"{name}: a fallback chain needs at least one provider")
        self.name = name
        self.clock: Clock = clock or LoopClock()
        self.deadlines = deadlines or Deadlines()
        self.config = config or ChainConfig()
        self.members = [_Member(p, i, self.clock, self.config) for i, p in enumerate(providers)]

    def state(self) -> list[dict[str, Any]]:
        """Plain data per provider, for metrics and /healthz."""
        return [m.snapshot() for m in self.members]

    def order(self) -> list[_Member[P]]:
        """Members to try now, best first; open breakers left out."""
        ranked = []
        for m in self.members:
            if m.breaker.state is BreakerState.OPEN:
                continue
            score = m.health.score
            band = 0 if score >= m.health.config.healthy else 1 if score >= m.health.config.degraded else 2
            # Healthy ones keep their configured priority (no flapping between 95 and
            # 93); degraded and worse go by score.
            ranked.append((band, 0.0 if band == 0 else -score, m.index, m))
        ranked.sort(key=lambda r: r[:3])
        return [r[3] for r in ranked]

    async def within(self, aw: Awaitable[T], at: float, name: str, phase: str, secs: float) -> T:
        """Await ``aw`` until ``at`` on the chain's clock, else ``ProviderTimeout``."""
        if isinstance(self.clock, LoopClock):
            try:
                async with asyncio.timeout_at(at) as cm:
                    return await aw
            except TimeoutError:
                if cm.expired():
                    raise ProviderTimeout(name, phase, secs) from None
                raise
        work = asyncio.ensure_future(aw)
        timer = asyncio.ensure_future(self.clock.sleep_until(at))
        timed_out = False
        try:
            await asyncio.wait((work, timer), return_when=asyncio.FIRST_COMPLETED)
            timed_out = not work.done()
        finally:  # also when we are cancelled: never leave the call running
            timer.cancel()
            if not work.done():
                work.cancel()
                # Let the abandoned call run its cleanup (close its socket) now.
                await asyncio.wait((work,))
        if timed_out:
            if not work.cancelled():
                work.exception()  # whatever it raised on the way out is superseded
            raise ProviderTimeout(name, phase, secs)
        return work.result()

    async def stream(self, call: Callable[[P], AsyncIterator[T]], d: Deadlines) -> AsyncIterator[T]:
        """Run ``call`` on the best provider, failing over until the first result."""
        errors: list[tuple[str, BaseException]] = []
        clock = self.clock
        for m in self.order():
            if not m.breaker.allow():
                continue
            m.requests += 1
            start = clock.now()
            try:
                it = call(m.provider)
            except Exception as e:  # noqa: BLE001 - a provider that fails to even start
                m.failed(e)
                errors.append((m.name, e))
                continue
            verdict: bool | None = None
            produced = False
            latency: float | None = None
            try:
                try:
                    first = await self.within(_step(it), start + min(d.connect + d.first_result, d.total),
                                              m.name, "first result", d.connect + d.first_result)
                except StopAsyncIteration:
                    verdict, latency = True, clock.now() - start
                    return  # nothing to say is an answer too
                except Exception as e:  # noqa: BLE001 - any failure here falls through
                    verdict = False
                    m.failed(e)
                    errors.append((m.name, e))
                    continue
                produced, latency = True, clock.now() - start
                yield first
                while True:
                    at = min(clock.now() + d.idle, start + d.total)
                    phase, secs = ("data (idle)", d.idle) if at < start + d.total else ("completion (total)", d.total)
                    try:
                        item = await self.within(_step(it), at, m.name, phase, secs)
                    except StopAsyncIteration:
                        verdict = True
                        return
                    except Exception as e:  # noqa: BLE001
                        verdict = False
                        # A lost turn counts double in health: one such failure makes
                        # the provider "degraded", so the next turn prefers a healthy one.
                        m.failed(e, weight=2)
                        raise StreamInterrupted(m.name, e) from e
                    yield item
            finally:
                await _close_quietly(it)
                if verdict is True or (verdict is None and produced):
                    # Cut short by the consumer (barge-in) after results: it worked.
                    m.succeeded(latency)
                elif verdict is None:
                    m.breaker.release()
        raise AllProvidersFailed(self.name, errors)


async def _close_quietly(it: AsyncIterator[Any]) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception as e:  # noqa: BLE001 - it already failed or finished; closing is best effort
        log.debug("closing a provider stream raised %r", e)


class FallbackLLM:
    """A ``LanguageModel`` over several, with breakers, health and outer deadlines."""

    def __init__(self, providers: Sequence[LanguageModel], *, name: str = "llm", clock: Clock | None = None,
                 deadlines: Deadlines | None = None, config: ChainConfig | None = None) -> None:
        self.name = name
        self.chain = FallbackChain(providers, name=name, clock=clock, deadlines=deadlines, config=config)

    def stream(self, messages: Sequence[Message], deadlines: Deadlines | None = None, *,
               tools: Sequence[Any] | None = None) -> AsyncIterator[Any]:
        """Text pieces (and, with ``tools``, ``ToolCall``s: members without tool
        support are asked without them)."""
        d = deadlines or self.chain.deadlines
        if not tools:
            return self.chain.stream(lambda p: p.stream(messages, d), d)
        return self.chain.stream(
            lambda p: cast(Any, p).stream(messages, d, tools=tools) if getattr(p, "supports_tools", False)
            else p.stream(messages, d), d)

    @property
    def supports_tools(self) -> bool:
        return any(getattr(m.provider, "supports_tools", False) for m in self.chain.members)

    def state(self) -> list[dict[str, Any]]:
        return self.chain.state()


class FallbackTTS:
    """A ``TextToSpeech`` over several; other rates are resampled to ``sample_rate``."""

    def __init__(self, providers: Sequence[TextToSpeech], *, name: str = "tts", sample_rate: int | None = None,
                 clock: Clock | None = None, deadlines: Deadlines | None = None,
                 config: ChainConfig | None = None) -> None:
        self.name = name
        self.chain = FallbackChain(providers, name=name, clock=clock, deadlines=deadlines, config=config)
        self.sample_rate = sample_rate or providers[0].sample_rate

    def synthesize(self, text: str, deadlines: Deadlines | None = None) -> AsyncIterator[PCM]:
        d = deadlines or self.chain.deadlines
        return self.chain.stream(lambda p: self._at_rate(p, text, d), d)

    async def _at_rate(self, p: TextToSpeech, text: str, d: Deadlines) -> AsyncIterator[PCM]:
        # A fallback voice at another rate (Piper's 22,050 Hz behind a 24 kHz vendor).
        rs = StreamResampler(p.sample_rate, self.sample_rate) if p.sample_rate != self.sample_rate else None
        it = p.synthesize(text, d)
        try:
            async for chunk in it:
                out = rs.process(chunk) if rs is not None else chunk
                if out.size:
                    yield out
        finally:
            await _close_quietly(it)
        tail = rs.flush() if rs is not None else None
        if tail is not None and tail.size:
            yield tail

    def state(self) -> list[dict[str, Any]]:
        return self.chain.state()


class FallbackSTT:
    """A ``SpeechToText`` over several (all at one ``sample_rate``)."""

    def __init__(self, providers: Sequence[SpeechToText], *, name: str = "stt", clock: Clock | None = None,
                 deadlines: Deadlines | None = None, config: ChainConfig | None = None) -> None:
        self.name = name
        self.chain = FallbackChain(providers, name=name, clock=clock, deadlines=deadlines, config=config)
        rates = {p.sample_rate for p in providers}
        if len(rates) > 1:  # audio is sent as it comes: no resampling per provider here
            raise ValueError(f"{name}: STT providers take different rates {sorted(rates)}")
        self.sample_rate = providers[0].sample_rate
        # Whole-utterance decoding only if every member decodes that way.
        self.whole_utterances = all(getattr(p, "whole_utterances", False) for p in providers)

    async def open(self, deadlines: Deadlines | None = None) -> Recognition:
        rec = _FallbackRecognition(self, deadlines or self.chain.deadlines)
        await rec.connect(exclude=())
        return rec

    async def _open_one(self, d: Deadlines, exclude: Sequence[str]) -> tuple[_Member[SpeechToText], Recognition]:
        errors: list[tuple[str, BaseException]] = []
        for m in self.chain.order():
            if m.name in exclude or not m.breaker.allow():
                continue
            m.requests += 1
            start = self.chain.clock.now()
            try:
                rec = await self.chain.within(m.provider.open(d), start + d.connect, m.name, "connect", d.connect)
            except Exception as e:  # noqa: BLE001 - fall through to the next provider
                m.failed(e)
                errors.append((m.name, e))
                continue
            except asyncio.CancelledError:
                m.breaker.release()
                raise
            m.succeeded(self.chain.clock.now() - start)
            return m, rec
        raise AllProvidersFailed(self.name, errors)

    def state(self) -> list[dict[str, Any]]:
        return self.chain.state()


class _FallbackRecognition:
    """A recognition that fails over until its first result (see the module docstring)."""

    def __init__(self, owner: FallbackSTT, d: Deadlines) -> None:
        self._owner = owner
        self._d = d
        self._member: _Member[SpeechToText] | None = None
        self._rec: Recognition | None = None
        self._tried: list[str] = []
        self._lock = asyncio.Lock()
        # Audio kept for replay until the first result: bounded, oldest dropped.
        self._replay: collections.deque[PCM | None] = collections.deque()  # None = finalize
        self._replay_samples = 0
        self._replay_limit = int(owner.chain.config.replay_seconds * owner.sample_rate)
        self.replay_dropped = 0
        self._got_result = False
        self._closed = False
        self._dead: ProviderError | None = None

    @property
    def provider(self) -> str | None:
        return self._member.name if self._member else None

    async def connect(self, exclude: Sequence[str]) -> None:
        self._member, self._rec = await self._owner._open_one(self._d, exclude)
        self._tried.append(self._member.name)
        for item in list(self._replay):
            if item is None:
                await self._rec.finalize()
            else:
                await self._rec.send(item)

    async def _failover(self, err: BaseException) -> None:
        """The current provider failed: reopen elsewhere (before any result), or raise."""
        if self._dead is not None:
            raise self._dead
        assert self._member is not None and self._rec is not None
        failed = self._member
        failed.failed(err, weight=2 if self._got_result else 1)
        await _close_recognition(self._rec)
        if self._got_result or self._closed:
            self._dead = StreamInterrupted(failed.name, err)
            raise self._dead from err
        log.warning("x %s failed before a result; failing over, replaying %d samples",
                    failed.name, self._replay_samples)
        try:
            await self.connect(exclude=self._tried)
        except ProviderError as e:
            self._dead = e
            raise

    async def _guard(self, op: Callable[[Recognition], Awaitable[None]]) -> None:
        if self._dead is not None:
            raise self._dead
        if self._closed:
            raise ProviderError(self._owner.name, "recognition is closed", retryable=False)
        async with self._lock:
            rec = self._rec
            assert rec is not None
            try:
                await op(rec)
            except ProviderError as e:
                if rec is self._rec:
                    await self._failover(e)

    def _keep(self, item: PCM | None) -> None:
        if self._got_result:
            return
        if item is None and self._replay and self._replay[-1] is None:
            return  # repeated finalizes coalesce, so the buffer stays bounded by its audio
        self._replay.append(item)
        if item is not None:
            self._replay_samples += item.size
            while self._replay_samples > self._replay_limit and self._replay:
                old = self._replay.popleft()
                if old is not None:
                    self._replay_samples -= old.size
                    self.replay_dropped += old.size

    async def send(self, pcm: PCM) -> None:
        self._keep(pcm)
        await self._guard(lambda r: r.send(pcm))

    async def finalize(self) -> None:
        self._keep(None)
        await self._guard(lambda r: r.finalize())

    def results(self) -> AsyncIterator[Transcription]:
        return self._results()

    async def _results(self) -> AsyncIterator[Transcription]:
        while True:
            rec = self._rec
            assert rec is not None
            it = rec.results()
            try:
                async for t in it:
                    if not self._got_result:
                        self._got_result = True
                        self._replay.clear()
                        self._replay_samples = 0
                    yield t
            except ProviderError as e:
                async with self._lock:
                    if rec is self._rec:
                        await self._failover(e)  # raises once results have been seen
                continue  # read from the replacement
            finally:
                await _close_quietly(it)
            if self._dead is not None:
                raise self._dead  # a send found the failure and it was past failover
            if rec is self._rec or self._closed:
                return
            # else: a send failed over meanwhile and closed the old one; read the new

    async def aclose(self) -> None:
        self._closed = True
        if self._rec is not None:
            await _close_recognition(self._rec)


async def _close_recognition(rec: Recognition) -> None:
    try:
        await rec.aclose()
    except Exception as e:  # noqa: BLE001 - closing a failed recognition is best effort
        log.debug("closing a recognition raised %r", e)
