"""A provider's standing: circuit breaker and health score, on an injected clock.

**Breaker**: closed → open after ``failure_threshold`` consecutive failures →
half-open once ``reset_timeout`` has passed, admitting one trial call → closed on
its success, open again on its failure. A call cancelled before it proved anything
releases the trial without a verdict.

**Health** (0-100): an EWMA of success (one failure from perfect leaves 70, still
healthy; three in a row fall below 40), scaled down by up to half as the time to
first result goes from ``good_latency`` to ``bad_latency``, so slowness alone
degrades a provider but never gets it skipped. Unused, the score relaxes back
toward 100 with a half-life: a provider skipped for being unhealthy is tried again
eventually instead of starving. Bands: healthy ≥ 70, degraded 40-70, unhealthy
below 40. The fallback chains (``resilience``) rank providers by these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ..media.clock import Clock

__all__ = ["BreakerState", "CircuitBreaker", "HealthConfig", "HealthScore"]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure breaker on an injected clock (see the module docstring)."""

    def __init__(self, clock: Clock, *, failure_threshold: int = 3, reset_timeout: float = 30.0) -> None:
        self._clock = clock
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._state = BreakerState.CLOSED
        self._failures = 0  # consecutive
        self._opened_at: float | None = None
        self._trial = False  # the half-open trial call is in flight
        self.opened_count = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._opened_at is not None:
            if self._clock.now() >= self._opened_at + self.reset_timeout:
                self._state = BreakerState.HALF_OPEN
                self._trial = False
        return self._state

    def allow(self) -> bool:
        """May a call go through now? In half-open, this reserves the one trial."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial:
            self._trial = True
            return True
        return False

    def record_success(self) -> None:
        if self.state is BreakerState.OPEN:
            return  # a late answer to a call from before the opening proves little
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._trial = False

    def record_failure(self) -> None:
        state = self.state
        self._failures += 1
        if state is BreakerState.HALF_OPEN or (
            state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._state = BreakerState.OPEN
            self._opened_at = self._clock.now()
            self._trial = False
            self.opened_count += 1

    def release(self) -> None:
        """A call ended with no verdict (cancelled before any result)."""
        self._trial = False

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state.value, "consecutive_failures": self._failures,
                "opened_at": self._opened_at, "opened_count": self.opened_count}


@dataclass(frozen=True, slots=True)
class HealthConfig:
    alpha: float = 0.3  # EWMA weight of the newest outcome
    good_latency: float = 0.5  # first result at or under this costs nothing
    bad_latency: float = 3.0  # at or over this halves the score
    recovery_half_life: float = 60.0  # seconds for an idle score's deficit to halve
    healthy: float = 70.0
    degraded: float = 40.0


class HealthScore:
    """A provider's 0-100 health from recent outcomes and latency."""

    def __init__(self, clock: Clock, config: HealthConfig | None = None) -> None:
        self._clock = clock
        self.config = config or HealthConfig()
        self._success = 1.0  # optimistic: an unknown provider is tried
        self._latency: float | None = None
        # Not read at construction: chains are built from configuration before the
        # event loop runs, and a LoopClock has no time without one.
        self._updated: float | None = None

    def _relaxed(self) -> float:
        if self._updated is None:
            return self._success
        elapsed = max(0.0, self._clock.now() - self._updated)
        return 1.0 - (1.0 - self._success) * float(0.5 ** (elapsed / self.config.recovery_half_life))

    def record(self, ok: bool, latency: float | None = None) -> None:
        a = self.config.alpha
        self._success = (1 - a) * self._relaxed() + a * (1.0 if ok else 0.0)
        self._updated = self._clock.now()
        if latency is not None:
            self._latency = latency if self._latency is None else (1 - a) * self._latency + a * latency

    @property
    def latency(self) -> float | None:
        return self._latency

    @property
    def score(self) -> float:
        c = self.config
        factor = 1.0
        if self._latency is not None and c.bad_latency > c.good_latency:
            over = (self._latency - c.good_latency) / (c.bad_latency - c.good_latency)
            factor = 1.0 - 0.5 * min(1.0, max(0.0, over))
        return round(100.0 * self._relaxed() * factor, 1)

    @property
    def status(self) -> str:
        s = self.score
        if s >= self.config.healthy:
            return "healthy"
        return "degraded" if s >= self.config.degraded else "unhealthy"

    def snapshot(self) -> dict[str, Any]:
        return {"score": self.score, "status": self.status, "latency": self._latency}
