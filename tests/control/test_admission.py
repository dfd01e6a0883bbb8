"""Admission: a caller's share (rate, concurrent, pending) versus a trusted peer
that carries many callers' calls (a SIP trunk, a media server)."""

from __future__ import annotations

import pytest

from voxline.control.admission import Admission
from voxline.control.ratelimit import RateLimiter
from voxline.control.session import Caps, SessionRegistry
from voxline.transports.base import Refused


def admission(max_sessions: int = 100) -> Admission:
    now = [0.0]
    registry = SessionRegistry(max_sessions, caps=Caps(per_key=3, pending_per_key=2))
    return Admission(registry, RateLimiter(per_minute=6, burst=2, clock=lambda: now[0]))


async def test_a_token_is_held_to_its_rate_and_its_pending_share() -> None:
    a = admission()
    a.admit("webrtc", "echo", tenant="t", key="tok")
    a.admit("webrtc", "echo", tenant="t", key="tok")
    with pytest.raises(Refused) as exc:
        a.admit("webrtc", "echo", tenant="t", key="tok")
    assert exc.value.caller_limit and exc.value.code in ("rate_limited", "pending_limit")


async def test_a_trusted_peer_is_held_only_to_the_service_capacity() -> None:
    a = admission(max_sessions=20)
    calls = [a.admit("sip", "echo", tenant="default", key=None) for _ in range(20)]
    assert len(calls) == 20 and len(a.registry) == 20  # no rate, no per-key or pending cap
    with pytest.raises(Refused) as exc:
        a.admit("sip", "echo", tenant="default", key=None)
    assert exc.value.code == "capacity" and not exc.value.caller_limit
    assert a.refused == {("capacity", "sip"): 1}
    for c in calls:
        await c.end("done")
