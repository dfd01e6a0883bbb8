"""A WebSocket media stream as a ``Transport``: a push sink over one socket.

What the pipeline sends (encoded frames, marks, an Interrupt) goes out through
one writer task and a bounded queue, so ``send()`` never blocks the pipeline:
at ``outbound_frames`` the oldest audio is dropped and counted (a peer that
stopped reading ends the call at ``send_timeout``). A barge-in is the dialect's
clear message, and the queue's audio is dropped with it. Marks echoed by the
peer become ``port.played(name)`` — in order, so an echo confirms every mark
sent before it; a mark still pending when the far end was cleared is never
confirmed (its audio was dropped, not played).

A malformed message is counted and dropped (``wire.StreamError``);
``max_faults`` of them close the stream with the code of the last (1007
unreadable, 1008 out of place). A peer silent for ``idle_timeout`` (media
streams send every 20 ms) is gone, and the call ends.

Both deadlines, the peer's silence and a send that does not complete within
``send_timeout``, are kept by one watchdog timer per stream rather than a
timeout scope around every message: a scope per 20 ms message each way costs
more than the message itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from voxline.media.frames import Dtmf, EndOfStream, Frame, Interrupt, Mark, Payload

from ..base import HANGUP, PEER_GONE, Port, SinkMode, TransportTraits, Unsupported, WireMedia, end_reason
from .wire import BAD_DATA, POLICY, Confirmed, Dialect, Digit, Event, Ignored, Media, Message, Start, Stop, StreamError

__all__ = ["StreamLimits", "Caller", "Counters", "StreamTransport", "limits_from", "fault"]

log = logging.getLogger(__name__)

PENDING_MARKS = 64  # marks sent and not yet confirmed that are remembered
CLEARED_MARKS = 64  # marks dropped by a clear, whose late echoes are ignored
CONTROL_ROOM = 64  # queued messages beyond the audio bound: marks, clears, events
CLOSE_TIMEOUT = 2.0  # s for a close handshake
LOGGED_FAULTS = 5  # faults logged per stream; the rest are only counted


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Every bound a stream has (``[streams]`` in the configuration)."""

    max_message: int = 64 * 1024  # bytes of one WebSocket message
    heartbeat: float = 10.0  # s between pings; no pong within half of it and the peer is gone
    start_timeout: float = 5.0  # s from the upgrade to the start message
    idle_timeout: float = 10.0  # s without a message from the peer
    open_timeout: float = 10.0  # s to build the call's pipeline
    send_timeout: float = 5.0  # s one outbound message may take to write
    max_faults: int = 10  # malformed messages tolerated before the stream is closed
    outbound_frames: int = 250  # audio frames queued to send (5 s of 20 ms)


def limits_from(config: Any) -> StreamLimits:
    """The limits in ``config.streams`` (defaults for a config without one)."""
    section = getattr(config, "streams", None)
    if section is None:
        return StreamLimits()
    names = StreamLimits.__dataclass_fields__
    return StreamLimits(**{n: getattr(section, n) for n in names if hasattr(section, n)})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a stream is, for admission: tenant and rate-limit key."""

    tenant: str
    key: str


class Counters:
    __slots__ = ("received", "faults", "ignored", "last_fault", "close_code")

    def __init__(self) -> None:
        self.received = 0
        self.faults = 0
        self.ignored = 0
        self.last_fault = ""
        self.close_code = BAD_DATA


class StreamTransport:
    """A push-sink transport over one prepared WebSocket (see the module docstring)."""

    def __init__(self, dialect: Dialect, ws: web.WebSocketResponse, media: WireMedia, limits: StreamLimits,
                 counters: Counters | None = None, name: str = "") -> None:
        self.kind = dialect.name
        self.traits = TransportTraits(media, SinkMode.PUSH, far_end_buffer=dialect.far_end_buffer,
                                      can_clear=dialect.can_clear, confirms_playout=dialect.confirms_playout)
        self.dialect = dialect
        self.ws = ws
        self.limits = limits
        self.name = name or dialect.name
        self._port: Port | None = None
        self._counters = counters or Counters()
        self._out: collections.deque[tuple[bool, Message]] = collections.deque()  # (is audio, message)
        self._queued_audio = 0
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._pending: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._cleared: collections.deque[str] = collections.deque(maxlen=CLEARED_MARKS)
        self._closed = asyncio.Event()
        self._watchdog: asyncio.TimerHandle | None = None
        self._heard = 0.0  # loop time of the peer's last message
        self._flushing = False
        self._stalled: Any = None  # a send begun in the caller's call that had to wait: the writer ends it
        self._pumping = False
        self._failed = False
        self._progress = 0.0  # loop time the writer last completed a message (or began a flush)
        self._silent = False
        self._closer: asyncio.Task[None] | None = None
        # Until the call is open, a failed build ends the session (which closes
        # this transport) before the door knows why: the door closes the socket
        # then, with the code that says why (1013 for capacity).
        self.live = False
        self._pts = 0
        self._bits = media.codec.bits_per_sample or 16
        self.media_in = 0
        self.digits_in = 0
        self.sent = 0
        self.dropped_out = 0
        self.marks_sent = 0
        self.marks_confirmed = 0
        self.marks_unknown = 0
        self.clears = 0
        self.end_reason = ""

    # -- the contract --------------------------------------------------------------

    def attach(self, port: Port) -> None:
        self._port = port

    def send(self, frame: Frame) -> None:
        t = type(frame)
        if t is Payload:
            msg = self.dialect.audio(frame.data)  # type: ignore[union-attr]
            if msg is not None:
                self._queue_audio(msg)
        elif t is Mark:
            self._flush_dialect()
            name = frame.name  # type: ignore[union-attr]
            msg = self.dialect.mark(name)
            if msg is not None and self._queue_control(msg):
                self._pending[name] = None
                while len(self._pending) > PENDING_MARKS:
                    self._pending.popitem(last=False)
                self.marks_sent += 1
        elif t is Interrupt:
            self.clear()
        elif t is EndOfStream:
            self._flush_dialect()

    def _flush_dialect(self) -> None:
        gathered = self.dialect.flush()
        if gathered is not None:
            self._queue_audio(gathered)

    def clear(self) -> int:
        dropped = self._queued_audio
        if dropped:
            self._out = collections.deque(item for item in self._out if not item[0])
            self._queued_audio = 0
        self.clears += 1
        self.dialect.flush()  # gathered and not sent: dropped with the rest
        # What the far end still held is dropped: the marks after it will never be true.
        self._cleared.extend(self._pending)
        self._pending.clear()
        msg = self.dialect.clear()
        if msg is not None:
            self._queue_control(msg)
        return dropped

    def send_dtmf(self, digits: str) -> None:
        raise Unsupported(f"DTMF cannot be sent on a {self.kind} stream")

    async def close(self, code: int = 1000, reason: str = "call ended") -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        writer, self._writer = self._writer, None
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()  # one writer at a time: the rest is flushed here
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        if self._closed.is_set():
            return
        self._closed.set()
        self.end_reason = self.end_reason or reason
        if not self.live:
            return
        if code == 1000:  # the call ends normally: what is gathered, then the goodbye
            gathered, bye = self.dialect.flush(), self.dialect.bye()
            self._out.extend((False, m) for m in (gathered, bye) if m is not None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._flush(), self.limits.send_timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()[:120]), CLOSE_TIMEOUT)

    def stats(self) -> dict[str, Any]:
        c = self._counters
        return {"received": c.received, "media_in": self.media_in, "digits_in": self.digits_in,
                "faults": c.faults, "ignored": c.ignored, "sent": self.sent, "dropped_out": self.dropped_out,
                "queued": len(self._out), "marks_sent": self.marks_sent, "marks_confirmed": self.marks_confirmed,
                "marks_unknown": self.marks_unknown, "clears": self.clears}

    # -- outbound ----------------------------------------------------------------------

    def _queue_audio(self, msg: Message) -> None:
        if self._closed.is_set():
            return
        if self._queued_audio >= self.limits.outbound_frames:
            for i, item in enumerate(self._out):  # the oldest audio goes: live audio cannot wait
                if item[0]:
                    del self._out[i]
                    self._queued_audio -= 1
                    self.dropped_out += 1
                    break
        self._out.append((True, msg))
        self._queued_audio += 1
        self._pump()

    def _queue_control(self, msg: Message) -> bool:
        if self._closed.is_set():
            return False
        if len(self._out) - self._queued_audio >= CONTROL_ROOM:
            self.dropped_out += 1  # a peer that reads nothing; the send timeout will end it
            return False
        self._out.append((False, msg))
        self._pump()
        return True

    def _pump(self) -> None:
        """Send what is queued now, in the caller's call, when nothing is in flight.

        aiohttp's send of an uncompressed frame writes to the transport and
        returns without suspending unless the transport is paused (the peer reads
        slowly): so the coroutine is stepped here, and only one that suspends is
        handed to the writer task, which finishes it and whatever queued behind it.
        One task wake per message saved; order and the send deadline unchanged."""
        if self._flushing or self._pumping or self._writer is None or self._failed:
            self._wake.set()
            return
        ws, out = self.ws, self._out
        self._pumping = True
        try:
            while out:
                is_audio, msg = out.popleft()
                if is_audio:
                    self._queued_audio -= 1
                coro = ws.send_str(msg) if isinstance(msg, str) else ws.send_bytes(msg)
                try:
                    waiting = coro.send(None)
                except StopIteration:
                    self.sent += 1
                    continue
                except Exception as exc:  # the socket is gone: the call ends (not inside our caller)
                    self._failed = True
                    asyncio.get_running_loop().call_soon(self.lost, f"send failed: {type(exc).__name__}")
                    return
                self._stalled = _Resume(coro, waiting)
                self._flushing = True  # the watchdog's send deadline runs from here
                self._progress = asyncio.get_running_loop().time()
                self._wake.set()
                return
        finally:
            self._pumping = False

    def start_writer(self) -> None:
        loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._write(), name=f"stream-writer:{self.name}")
        self._heard = self._progress = loop.time()
        self._arm(loop)

    # -- deadlines ---------------------------------------------------------------------

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        period = max(0.05, min(self.limits.idle_timeout, self.limits.send_timeout) / 4)
        self._watchdog = loop.call_later(period, self._watch)

    def _watch(self) -> None:
        """Every quarter of the shorter deadline: is the peer silent, or a send stuck?"""
        self._watchdog = None
        if self._closed.is_set():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._heard >= self.limits.idle_timeout:
            self._silent = True
            self._closer = loop.create_task(self.close(POLICY, "peer silent"), name=f"stream-silent:{self.name}")
            return
        if self._flushing and now - self._progress >= self.limits.send_timeout:
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.cancel()
            self.lost("send failed: TimeoutError")
            return
        self._arm(loop)

    async def _write(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self._flush()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket is gone or stalled: the call ends
            self.lost(f"send failed: {type(exc).__name__}")

    async def _flush(self) -> None:
        """Send what is queued. A send that blocks (the peer stopped reading) is
        ended by the watchdog after ``send_timeout``, or by ``close``'s own deadline."""
        ws, loop = self.ws, asyncio.get_running_loop()
        self._flushing = True
        self._progress = loop.time()
        try:
            stalled, self._stalled = self._stalled, None
            if stalled is not None:  # begun by _pump: it goes first
                await stalled
                self.sent += 1
                self._progress = loop.time()
            while self._out:
                is_audio, msg = self._out.popleft()
                if is_audio:
                    self._queued_audio -= 1
                if isinstance(msg, str):
                    await ws.send_str(msg)
                else:
                    await ws.send_bytes(msg)
                self.sent += 1
                self._progress = loop.time()
        finally:
            self._flushing = False

    def send_event(self, event: Mapping[str, Any]) -> None:
        msg = self.dialect.event(event)
        if msg is not None:
            self._queue_control(msg)

    # -- inbound -----------------------------------------------------------------------

    def take(self, event: Event) -> str | None:
        """One event from the peer, after the start; a reason to end, or None."""
        port = self._port
        t = type(event)
        if t is Media:
            if port is not None:
                data = event.payload  # type: ignore[union-attr]
                now = asyncio.get_running_loop().time()
                codec = self.traits.media.codec
                port.receive(Payload(data, codec.name, codec.rate, self._pts, now))
                self._pts += len(data) * 8 // self._bits
            self.media_in += 1
        elif t is Digit:
            self.digits_in += 1
            if port is not None:
                port.receive(Dtmf(event.digit, 0.0, asyncio.get_running_loop().time()))  # type: ignore[union-attr]
        elif t is Confirmed:
            name = event.name  # type: ignore[union-attr]
            if name in self._pending:
                # Marks play in order: every mark sent before this one has played too.
                while self._pending:
                    earlier, _ = self._pending.popitem(last=False)
                    self.marks_confirmed += 1
                    if port is not None:
                        port.played(earlier)
                    if earlier == name:
                        break
            elif name not in self._cleared:
                self.marks_unknown += 1
        elif t is Stop:
            return end_reason(HANGUP, event.reason)  # type: ignore[union-attr]
        elif t is Ignored:
            self._counters.ignored += 1
        elif t is Start:
            raise StreamError("a second start message", POLICY)
        return None

    def connected(self) -> None:
        """The call is open: media flows."""
        if self._port is not None:
            self._port.connected()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def lost(self, reason: str) -> None:
        """The stream ended on the peer's side (or failed): the session ends."""
        self.end_reason = self.end_reason or reason
        if self._port is not None:
            self._port.closed(reason)

    async def run(self) -> str:
        """Read until the stream ends; return why."""
        ws, dialect, c, limits = self.ws, self.dialect, self._counters, self.limits
        loop = asyncio.get_running_loop()
        while True:
            msg = await ws.receive()  # the peer's silence is the watchdog's (see _watch)
            self._heard = loop.time()
            kind = msg.type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                c.received += 1
                try:
                    event = dialect.on_text(msg.data, True) if kind is WSMsgType.TEXT \
                        else dialect.on_binary(msg.data, True)
                    reason = self.take(event)
                except StreamError as exc:
                    if fault(c, exc, self.name, limits):
                        await self.close(c.close_code, "too many malformed messages")
                        return f"malformed: {exc}"
                    continue
                if reason is not None:
                    return reason
            elif kind is WSMsgType.ERROR:
                c.faults += 1
                return f"error: {ws.exception()}"
            else:  # CLOSE, CLOSING, CLOSED
                if self._silent:
                    return end_reason(PEER_GONE, "silent")
                return end_reason(HANGUP, "closed the stream") if not self._closed.is_set() \
                    else self.end_reason or "closed"

    async def ended(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), timeout)


class _Resume:
    """Awaiting this goes on with a coroutine that was stepped outside a task and
    suspended on ``waiting`` (what it yielded): the awaiting task waits on that,
    then resumes the coroutine, as if the task had run it from the start (as an
    eager task does). Cancelling the task throws into the coroutine."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Any, waiting: Any) -> None:
        self.coro, self.waiting = coro, waiting

    def __await__(self) -> Any:
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                yield waiting
            except BaseException as exc:
                try:
                    waiting = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting = coro.send(None)
                except StopIteration as stop:
                    return stop.value


def fault(c: Counters, exc: StreamError, name: str, limits: StreamLimits) -> bool:
    """Count a malformed message; True when the stream should close for it."""
    c.faults += 1
    c.last_fault = str(exc)
    c.close_code = exc.code
    if c.faults <= LOGGED_FAULTS:
        log.warning("x %s: dropped a message (%d so far): %s", name, c.faults, exc)
    return c.faults >= limits.max_faults
