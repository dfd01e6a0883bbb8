"""Admission: the one decision every front door asks before a call starts.

WebRTC offers, SIP INVITEs, WebSocket media streams and AudioSocket connections
all call ``Admission.admit``; each turns a ``Refused`` into its own terms (HTTP
503 + Retry-After, or 429 for the rate limit; SIP 486/503; WebSocket close 1013;
AudioSocket hangup). In order: the runtime must be ready, the registry must be
admitting and have room, and the caller's key (a token id, a peer address) must
be within its session-creation rate, and within its concurrent and pending caps
and its tenant's (see ``session.Caps``). Refusals are counted by code and transport.

A refusal raised inside a session's build (the Silero batcher full, the model
executor saturated) is capacity too: ``capacity_error`` recognises those, so a
front door answers 503 for them as well, never 500.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from voxline.media.silero import BatcherFull
from voxline.transports.base import Refused

from .ratelimit import RateLimiter
from .session import Session, SessionRegistry

__all__ = ["Admission", "Refused", "capacity_error"]

BUSY_RETRY = 5  # s, Retry-After while not ready


class Admission:
    def __init__(self, registry: SessionRegistry, limiter: RateLimiter | None = None,
                 ready: Callable[[], bool] | None = None) -> None:
        self.registry = registry
        self.limiter = limiter
        self._ready = ready or (lambda: True)
        self.refused: dict[tuple[str, str], int] = {}  # (code, transport) -> count

    def admit(self, transport: str, agent: str, *, tenant: str, key: str | None) -> Session:
        """A new session, or ``Refused`` saying why not and when to try again."""
        try:
            if not self._ready():
                raise Refused("not_ready", "the runtime is still starting", BUSY_RETRY)
            if self.limiter is not None and key is not None:
                wait = self.limiter.take(key)
                if wait > 0:
                    raise Refused("rate_limited", "session creation rate limit reached", max(1, math.ceil(wait)))
            return self.registry.admit(tenant, transport, agent, key)
        except Refused as exc:
            self.count(exc, transport)
            raise

    def count(self, exc: Refused, transport: str) -> None:
        k = (exc.code, transport)
        self.refused[k] = self.refused.get(k, 0) + 1


def capacity_error(exc: BaseException) -> Refused | None:
    """The ``Refused`` a build failure stands for, if it was a shared resource
    at its limit rather than a fault."""
    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, BatcherFull):
        return Refused("capacity", f"voice detection at capacity: {exc}", BUSY_RETRY)
    return None
