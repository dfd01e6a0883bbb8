"""Strict and symmetric RTP, as data: whom to accept packets from, whom to send to.

A stream's remote address comes from SDP, which behind NAT is often not where
the packets come from. So the filter may *learn* the address from the first
valid packet (latching): after that, with ``strict``, packets from any other
address are dropped and counted (RTP injection and stray streams from earlier
calls on a reused port), and with symmetric RTP (RFC 4961) the address to send
to is the learned one. Only a packet that parsed, and whose stream state
accepts it, should be offered: a forged garbage datagram must not latch.

``IdleDetector`` ends calls whose media stopped: the transport notes each valid
packet and asks ``expired(now)`` on its timer.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Address", "SourceFilter", "IdleDetector"]

Address = tuple[str, int]


@dataclass(slots=True)
class SourceFilter:
    """Per-stream source policy: ``accept(addr)`` for each valid packet."""

    expected: Address | None = None
    strict: bool = True
    latch: bool = True
    learned: Address | None = None
    accepted: int = 0
    dropped: int = 0

    def accept(self, source: Address) -> bool:
        """Whether a (valid) packet from ``source`` belongs to this stream."""
        if self.learned is None and (self.latch or self.expected is None):
            self.learned = source
        allowed = self.learned if self.learned is not None else self.expected
        if self.strict and source != allowed:
            self.dropped += 1
            return False
        self.accepted += 1
        return True

    def send_to(self) -> Address | None:
        """Where to send: the learned source (symmetric RTP), else SDP's address."""
        if self.learned is not None and (self.latch or self.expected is None):
            return self.learned
        return self.expected

    def told(self, address: Address) -> None:
        """SDP gave (or a re-INVITE changed) the remote address: learn afresh."""
        self.expected = address
        self.learned = None


class IdleDetector:
    """Seconds since the last packet; ``expired`` once past ``timeout``."""

    __slots__ = ("timeout", "_last")

    def __init__(self, timeout: float, now: float) -> None:
        if timeout <= 0:
            raise ValueError(f"idle timeout {timeout} is not positive")
        self.timeout = timeout
        self._last = now

    def seen(self, now: float) -> None:
        self._last = max(self._last, now)

    def idle_for(self, now: float) -> float:
        return max(0.0, now - self._last)

    def expired(self, now: float) -> bool:
        return self.idle_for(now) >= self.timeout

    def deadline(self) -> float:
        """When the stream expires if nothing more arrives (for the caller's timer)."""
        return self._last + self.timeout
