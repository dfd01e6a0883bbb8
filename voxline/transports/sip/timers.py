"""RFC 3261 timer values (§17, Table 4 in Appendix A), as data.

T1 is the round-trip estimate, T2 the cap on non-INVITE retransmission
intervals, T4 how long a message may linger in the network. Timers that exist
only to absorb retransmissions (D, I, J, K) are zero over a reliable transport,
and the retransmission timers (A, E, G) are not used at all there.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Deadlines", "TimerConfig"]


@dataclass(frozen=True, slots=True)
class TimerConfig:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def b(self) -> float:
        """INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def f(self) -> float:
        """Non-INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def h(self) -> float:
        """Wait for the ACK of a non-2xx final response."""
        return 64 * self.t1

    @property
    def m(self) -> float:
        """RFC 6026: how long an INVITE transaction stays to take 2xx retransmissions (L, M)."""
        return 64 * self.t1

    def d(self, reliable: bool) -> float:
        """Wait for response retransmissions (INVITE client): at least 32 s on UDP."""
        return 0.0 if reliable else max(32.0, 64 * self.t1)

    def i(self, reliable: bool) -> float:
        """Wait for ACK retransmissions (INVITE server)."""
        return 0.0 if reliable else self.t4

    def j(self, reliable: bool) -> float:
        """Wait for request retransmissions (non-INVITE server)."""
        return 0.0 if reliable else 64 * self.t1

    def k(self, reliable: bool) -> float:
        """Wait for response retransmissions (non-INVITE client)."""
        return 0.0 if reliable else self.t4


class Deadlines:
    """A transaction's running timers: name -> absolute deadline on the caller's clock."""

    __slots__ = ("_at",)

    def __init__(self) -> None:
        self._at: dict[str, float] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._at

    def __bool__(self) -> bool:
        return bool(self._at)

    def set(self, name: str, when: float) -> None:
        self._at[name] = when

    def cancel(self, *names: str) -> None:
        for n in names:
            self._at.pop(n, None)

    def clear(self) -> None:
        self._at.clear()

    def next(self) -> float | None:
        return min(self._at.values()) if self._at else None

    def pop_due(self, now: float) -> tuple[str, float] | None:
        """The earliest timer due by ``now`` (removed), or None."""
        if not self._at:
            return None
        name, when = min(self._at.items(), key=lambda kv: kv[1])
        if when > now:
            return None
        del self._at[name]
        return name, when
