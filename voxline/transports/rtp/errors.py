"""The RTP layer's errors: one family for bad wire input, one for exhausted ports.

Every parser here raises an ``RtpError`` (a ``ValueError``) whose message names the
field at fault, so a transport can count and drop a bad datagram with one
``except`` and log why. ``RtcpError`` and ``DtmfError`` are members of the same
family: a caller that only wants "this datagram was bad" catches ``RtpError``.

Running out of ports is not bad input but a capacity limit, so it is a separate
error that a session can turn into a refusal (SIP 503) instead of a crash.
"""

from __future__ import annotations

__all__ = ["RtpError", "RtcpError", "DtmfError", "PortsExhausted"]


class RtpError(ValueError):
    """A datagram that is not a valid RTP packet (or one of its payloads)."""


class RtcpError(RtpError):
    """A datagram that is not a valid RTCP packet or compound packet."""


class DtmfError(RtpError):
    """A payload that is not a valid RFC 4733 telephone-event."""


class PortsExhausted(RuntimeError):
    """Every port (pair) of the range is in use."""
