"""Session-creation rate limit: one token bucket per identity, on an injected clock.

A bucket holds up to ``burst`` tokens and refills at ``per_minute / 60`` tokens a
second; creating a session takes one. An empty bucket answers with how long until
the next token, which becomes the 429's ``Retry-After``.

Memory is bounded: at most ``max_keys`` buckets, least recently used evicted
first. An evicted bucket comes back full, which can only be more lenient, and only
for an identity idle long enough to fall out of the recently-used set.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

__all__ = ["RateLimiter"]

DEFAULT_MAX_KEYS = 10_000


class RateLimiter:
    def __init__(
        self,
        per_minute: float,
        burst: int,
        clock: Callable[[], float],
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self.rate = per_minute / 60.0  # tokens per second; <= 0 disables the limit
        self.burst = max(1, burst)
        self._clock = clock
        self._max_keys = max_keys
        # key -> (tokens, time of last update)
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self.limited = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if granted, else seconds until one is available."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.rate
            self.limited += 1
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)
