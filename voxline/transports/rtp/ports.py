"""RTP port allocation from a configured range, as data (no sockets).

RFC 3550 §11 puts RTP on an even port and its RTCP on the next, odd one; with
rtcp-mux (RFC 5761) one port carries both, and every port of the range can be
used. Ports are handed out round-robin, so a port just released is the last to
be reused: stray packets of an ended call do not land in the next call at once.
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass

from voxline.transports.rtp.errors import PortsExhausted

__all__ = ["PortPair", "PortAllocator", "shared_allocator"]


@dataclass(frozen=True, slots=True)
class PortPair:
    rtp: int
    rtcp: int

    @property
    def muxed(self) -> bool:
        return self.rtp == self.rtcp


class PortAllocator:
    """Hands out RTP ports (with their RTCP port) from ``[first, last]``."""

    def __init__(self, first: int, last: int, *, rtcp_mux: bool = False) -> None:
        if not 1024 <= first <= last <= 65535:
            raise ValueError(f"RTP port range {first}-{last} is not within 1024-65535")
        self.first, self.last, self.rtcp_mux = first, last, rtcp_mux
        if rtcp_mux:
            ports = range(first, last + 1)
        else:
            ports = range(first + (first & 1), last, 2)  # even, with its odd neighbour
        if not ports:
            raise ValueError(f"RTP port range {first}-{last} holds no port pair")
        self.size = len(ports)
        self._free: deque[int] = deque(ports)
        self._used: set[int] = set()

    @property
    def available(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._used)

    def allocate(self) -> PortPair:
        if not self._free:
            kind = "ports" if self.rtcp_mux else "port pairs"
            raise PortsExhausted(
                f"all {self.size} RTP {kind} of {self.first}-{self.last} are in use"
            )
        port = self._free.popleft()
        self._used.add(port)
        return PortPair(port, port if self.rtcp_mux else port + 1)

    def release(self, pair: PortPair) -> None:
        """Give a pair back; releasing one that is not allocated is a bug, raised."""
        if pair.rtp not in self._used:
            raise ValueError(f"RTP port {pair.rtp} is not allocated")
        self._used.remove(pair.rtp)
        self._free.append(pair.rtp)


_SHARED: "weakref.WeakValueDictionary[tuple[int, int, bool], PortAllocator]" = weakref.WeakValueDictionary()


def shared_allocator(first: int, last: int, *, rtcp_mux: bool = False) -> PortAllocator:
    """The process's allocator for ``[first, last]``: every door taking RTP ports
    from one configured range (SIP calls, ARI external media) shares it, so none
    hands out a port another holds. It lives while some door holds it."""
    key = (first, last, rtcp_mux)
    allocator = _SHARED.get(key)
    if allocator is None:
        allocator = _SHARED[key] = PortAllocator(first, last, rtcp_mux=rtcp_mux)
    return allocator
