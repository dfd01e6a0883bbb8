"""When to send the next RTCP report (RFC 3550 §6.2, A.7), as data.

The full algorithm scales the interval with the number of members and senders
and reconsiders it as they change. A voxline stream has two parties, so it is
simplified here to what that leaves:

- the deterministic interval is ``avg_rtcp_size * members / rtcp_bandwidth``,
  with RTCP allowed 5 % of the session bandwidth, but never less than ``T_MIN``
  (5 s; half of it before the first report, so a new call reports early);
- it is multiplied by a random factor in [0.5, 1.5] (so that reports of many
  calls started together spread out) and divided by e - 3/2 to compensate for
  the timer reconsideration A.7 would do;
- the average RTCP size follows each report sent with gain 1/16.

The random source is injected, so tests choose the factors.
"""

from __future__ import annotations

import math
import random

__all__ = ["T_MIN", "RTCP_FRACTION", "ReportScheduler"]

T_MIN = 5.0
RTCP_FRACTION = 0.05
_COMPENSATION = math.e - 1.5
# An IPv4 + UDP header, counted in the average size as §6.2 asks.
_UDP_IP_OVERHEAD = 28


class ReportScheduler:
    """``next_report_at()`` says when to report; ``sent(now, size)`` says one went."""

    def __init__(
        self,
        now: float,
        *,
        session_bandwidth: float = 64_000.0,
        rng: random.Random | None = None,
        members: int = 2,
        initial_size: int = 128,
    ) -> None:
        if session_bandwidth <= 0:
            raise ValueError(f"session bandwidth {session_bandwidth} is not positive")
        self.rtcp_bandwidth = session_bandwidth * RTCP_FRACTION / 8.0  # octets/s
        self.members = members
        self.avg_size = float(initial_size + _UDP_IP_OVERHEAD)
        self._rng = rng if rng is not None else random.Random()
        self.initial = True
        self.reports_sent = 0
        self._next = now + self.interval()

    def deterministic_interval(self) -> float:
        t_min = T_MIN / 2 if self.initial else T_MIN
        return max(t_min, self.avg_size * self.members / self.rtcp_bandwidth)

    def interval(self) -> float:
        """One randomised interval: deterministic x U[0.5, 1.5] / (e - 3/2)."""
        factor = 0.5 + self._rng.random()
        return self.deterministic_interval() * factor / _COMPENSATION

    def next_report_at(self) -> float:
        return self._next

    def due(self, now: float) -> bool:
        return now >= self._next

    def sent(self, now: float, size: int) -> None:
        """A report of ``size`` octets (the RTCP compound) went at ``now``."""
        self.avg_size += ((size + _UDP_IP_OVERHEAD) - self.avg_size) / 16.0
        self.initial = False
        self.reports_sent += 1
        self._next = now + self.interval()
