"""Splitting a byte stream (TCP, TLS) into SIP messages by Content-Length.

RFC 3261 §18.3: on a stream, Content-Length says where the body ends and the
next message starts. The framer buffers at most ``Limits.max_message`` bytes: an
incomplete message larger than that is an error (513), not an ever-growing
buffer. Empty lines between messages are skipped; a double CRLF is a keep-alive
ping (RFC 5626 §4.4.1), counted in ``pings`` so the transport can answer with a
single CRLF. A missing Content-Length is read as 0 (a stream message with a body
must carry one).

Messages come out framed but not header-checked: run ``validate_request`` (or
``check_headers``) on each, so one bad header rejects one message, not the
connection. A framing error (bad start line, bad Content-Length, too large)
leaves the stream unsynchronizable: the framer refuses further input and the
connection should be closed (messages framed before the error are returned
first; the error is raised by the next ``feed``).
"""

from __future__ import annotations

from .errors import SipParseError, SipUsageError
from .message import DEFAULT_LIMITS, Limits, Request, Response, content_length, parse_head

__all__ = ["StreamFramer"]


class StreamFramer:
    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.pings = 0
        self._buf = bytearray()
        self._broken = False
        self._pending: SipParseError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Request | Response]:
        """Add received bytes; return every message now complete, in order."""
        if self._pending is not None:
            err, self._pending = self._pending, None
            raise err
        if self._broken:
            raise SipUsageError("stream framer used after a framing error")
        self._buf += data
        out: list[Request | Response] = []
        try:
            while True:
                msg = self._next()
                if msg is None:
                    break
                out.append(msg)
        except SipParseError as e:
            self._broken = True
            if not out:
                raise
            # The messages framed before the error are delivered; the error is next.
            self._pending = e
        return out

    def _next(self) -> Request | Response | None:
        buf = self._buf
        while buf.startswith(b"\r\n"):
            if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                return None  # perhaps half of a ping
            if buf.startswith(b"\r\n\r\n"):
                self.pings += 1
                del buf[:4]
            else:
                del buf[:2]
        if not buf or buf == b"\r":
            return None
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.limits.max_message:
                raise SipParseError("message: header section exceeds the size limit", status=513, header="message")
            return None
        msg = parse_head(bytes(buf[: end + 2]), self.limits)
        length = content_length(msg) or 0
        total = end + 4 + length
        if total > self.limits.max_message:
            raise SipParseError(f"message: larger than {self.limits.max_message} bytes", status=513, header="message")
        if len(buf) < total:
            return None
        msg.body = bytes(buf[end + 4 : total])
        del buf[:total]
        return msg
