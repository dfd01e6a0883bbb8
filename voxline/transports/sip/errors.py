"""The SIP error family: one exception tree, and each error says whose fault it is.

``SipParseError`` is the remote side's fault (a malformed message); it carries
the status a UAS answers with (400, 413, 505, 513, ...) and the header or field
it is about, so a log line or a response's reason phrase names what was wrong.
``SipUsageError`` is ours: the code asked for something the protocol forbids
(a response to an ACK, a request in a terminated dialog). h11 splits its
errors the same way (``RemoteProtocolError`` / ``LocalProtocolError``).
"""

from __future__ import annotations

__all__ = ["SipError", "SipParseError", "SipUsageError"]


class SipError(ValueError):
    """Base of every error raised by the SIP package."""


class SipParseError(SipError):
    """A received message (or part of one) is malformed.

    ``status`` is the response a UAS would give; ``header`` names the header
    (or ``"start-line"``, ``"body"``, ``"message"``) where parsing failed.
    """

    def __init__(self, message: str, *, status: int = 400, header: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.header = header


class SipUsageError(SipError):
    """The local code misused the protocol layer (not the peer's fault)."""
