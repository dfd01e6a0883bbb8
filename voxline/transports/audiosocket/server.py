"""AudioSocket calls: the transport over one TCP connection, and the door's listener.

Asterisk connects (``AudioSocket(uuid,host:port)`` in the dialplan, or
``Dial(AudioSocket/host:port/uuid/c(slin16))``) and sends the UUID, then audio.
The first audio message's kind says the call's rate; voxline answers in the
same kind, so the call runs at whatever rate Asterisk chose (8 kHz from the
dialplan application, up to 192 kHz through the channel driver). Only then is
the call admitted and opened: the pipeline is built for the rate it will carry.

Writes never wait: a frame goes to the socket's buffer, and past
``WRITE_BUFFER`` bytes (a peer that stopped reading) frames are dropped and
counted. AudioSocket has no way to drop what Asterisk has queued, nor playout
confirmations: ``clear()`` drops nothing at the far end, and what was sent
counts as heard. When the agent ends the call voxline sends hangup (0x00)
before closing. A refusal (capacity, draining, rate) is a hangup too. A peer
silent for ``streams.idle_timeout`` (Asterisk sends a frame every 20 ms), a
UUID or audio that never comes within ``streams.start_timeout``, an error
message (0xFF) or ``streams.max_faults`` malformed messages end the call with a
hangup. AudioSocket carries no credentials: the listener binds loopback by
default (``audiosocket_host``, ``audiosocket_port``; port -1 turns it off).

The UUID names the call: it is kept in the session (``extra``), logged, and
``audiosocket_agents`` (``["<uuid>=<agent>"]``) picks the agent by it, so a
dialplan chooses the agent by the UUID it passes. An unknown agent is a hangup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from voxline.codecs import l16
from voxline.config import ConfigError
from voxline.media.frames import Dtmf, Frame, Payload

from ..base import (HANGUP, PEER_GONE, BadRequest, Door, Port, Refused, Service, SinkMode, TransportTraits, Unsupported,
                    WireMedia, end_reason)
from ..streams.transport import StreamLimits, limits_from
from . import wire
from .wire import AudioSocketError, Framer, Message

__all__ = ["AudioSocketTransport", "AudioSocketServer", "agents_by_uuid", "door", "DEFAULT_PORT"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 9092
READ_SIZE = 8192
WRITE_BUFFER = 64 * 1024  # bytes waiting in the socket: 2 s of 16 kHz audio
HANGUP_TIMEOUT = 1.0  # s to hand the hangup to the peer
EARLY_DIGITS = 8  # digits kept from before the call opened
STOP_TIMEOUT = 5.0


class AudioSocketTransport:
    kind = "audiosocket"

    def __init__(self, writer: asyncio.StreamWriter, audio_kind: int, name: str = "audiosocket") -> None:
        self.traits = TransportTraits(WireMedia(l16(wire.RATES[audio_kind], little_endian=True), 20),
                                      SinkMode.PUSH)
        self.audio_kind = audio_kind
        self.name = name
        self._writer = writer
        self._port: Port | None = None
        self._closed = asyncio.Event()
        self._pts = 0
        self.media_in = 0
        self.digits_in = 0
        self.sent = 0
        self.dropped_out = 0
        self.faults = 0
        self.ignored = 0
        self.hangup_sent = False

    def attach(self, port: Port) -> None:
        self._port = port

    @property
    def port(self) -> Port | None:
        return self._port

    def send(self, frame: Frame) -> None:
        if type(frame) is not Payload or self._closed.is_set():
            return  # marks and interrupts: AudioSocket has neither confirmations nor a clear
        transport = self._writer.transport
        if transport.is_closing() or transport.get_write_buffer_size() > WRITE_BUFFER:
            self.dropped_out += 1
            return
        self._writer.write(wire.audio(self.audio_kind, frame.data))
        self.sent += 1

    def clear(self) -> int:
        return 0  # nothing queued here, and no way to drop what Asterisk holds

    def send_dtmf(self, digits: str) -> None:
        raise Unsupported("Asterisk takes only hangup and audio on an AudioSocket")

    def receive_audio(self, payload: bytes) -> None:
        port = self._port
        self.media_in += 1
        if port is not None:
            codec = self.traits.media.codec
            port.receive(Payload(payload, codec.name, codec.rate, self._pts, asyncio.get_running_loop().time()))
        self._pts += len(payload) // 2

    def receive_digit(self, digit: str) -> None:
        self.digits_in += 1
        if self._port is not None:
            self._port.receive(Dtmf(digit, 0.0, asyncio.get_running_loop().time()))

    async def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        await _hang_up(self._writer, self)

    async def ended(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), timeout)

    def stats(self) -> dict[str, Any]:
        return {"rate": self.traits.media.rate, "media_in": self.media_in, "digits_in": self.digits_in,
                "sent": self.sent, "dropped_out": self.dropped_out, "faults": self.faults,
                "ignored": self.ignored, "hangup_sent": self.hangup_sent}


async def _hang_up(writer: asyncio.StreamWriter, transport: AudioSocketTransport | None = None) -> None:
    """Send hangup (if the socket is still open) and close, within a deadline."""
    with contextlib.suppress(Exception):
        if not writer.transport.is_closing():
            writer.write(wire.hangup())
            if transport is not None:
                transport.hangup_sent = True
            await asyncio.wait_for(writer.drain(), HANGUP_TIMEOUT)
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), HANGUP_TIMEOUT)


class _Connection:
    """Reads messages off one connection, with a deadline for each."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._framer = Framer()
        self._ready: list[Message] = []
        self.eof = False

    async def next(self, timeout: float) -> Message | None:
        """The next message; None at the end of the stream. ``TimeoutError`` if none in time;
        ``AudioSocketError`` for a stream that ends inside a message."""
        while not self._ready:
            async with asyncio.timeout(timeout):
                data = await self._reader.read(READ_SIZE)
            if not data:
                self.eof = True
                if self._framer.pending:
                    raise AudioSocketError(f"the stream ended inside a message ({self._framer.pending} bytes)")
                return None
            self._ready = self._framer.feed(data)
        return self._ready.pop(0)


class AudioSocketServer:
    """The door's listener and handle: ``port`` is where it listens."""

    def __init__(self, host: str, port: int, limits: StreamLimits,
                 agents: Mapping[uuid.UUID, str] | None = None) -> None:
        self.host = host
        self.agents = dict(agents or {})  # a call's UUID -> its agent (others: the service's default)
        self.requested_port = port
        self.limits = limits
        self.service: Service | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = 0
        self.faults = 0

    @property
    def port(self) -> int | None:
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, service: Service) -> None:
        self.service = service
        if self.requested_port < 0:
            return
        try:
            self._server = await asyncio.start_server(self._accept, self.host, self.requested_port)
        except OSError as exc:
            # The HTTP API stays up; every AudioSocket call fails until this is fixed.
            log.error("AudioSocket cannot listen on %s:%d: %s", self.host, self.requested_port, exc)
            return
        log.info("AudioSocket listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STOP_TIMEOUT)
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), STOP_TIMEOUT)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer), name="audiosocket-call")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else str(peer)
        try:
            await self._call(_Connection(reader), writer, host)
        except Exception:
            log.exception("AudioSocket connection from %s failed", host)
        finally:
            await _hang_up(writer)

    async def _call(self, conn: _Connection, writer: asyncio.StreamWriter, host: str) -> None:
        limits, service = self.limits, self.service
        assert service is not None
        try:
            first = await conn.next(limits.start_timeout)
            if first is None:
                return
            call_uuid = wire.uuid_of(first)
            audio_kind, first_audio, digits = await self._first_audio(conn)
        except (TimeoutError, AudioSocketError) as exc:
            self.faults += 1
            log.warning("x AudioSocket from %s: %s", host, exc or "nothing in time")
            return
        if audio_kind is None:
            return  # hung up before any audio
        try:
            call = service.admit("audiosocket", self.agents.get(call_uuid), tenant="default",
                                 key=None)  # a media server carries many callers' calls
            call.extra["peer"] = host  # for the call's record
        except (Refused, BadRequest) as exc:
            self.refused += 1
            log.info("AudioSocket call %s refused: %s", call_uuid, exc)
            return  # the finally hangs up
        transport = AudioSocketTransport(writer, audio_kind, name=f"audiosocket:{call.id}")
        try:
            async with asyncio.timeout(limits.open_timeout):
                await service.open(call, transport)
        except Exception as exc:
            log.warning("AudioSocket call %s: opening failed: %s", call_uuid, exc)
            await call.end("open failed")
            return
        log.info("AudioSocket call %s from %s: session %s at %d Hz", call_uuid, host, call.id,
                 transport.traits.media.rate, extra={"session_id": call.id})
        call_extra = getattr(call, "extra", None)
        if isinstance(call_extra, dict):
            call_extra["audiosocket_uuid"] = str(call_uuid)
        if transport.port is not None:
            transport.port.connected()
        transport.receive_audio(first_audio)
        for digit in digits:
            transport.receive_digit(digit)
        reason = await self._run(conn, transport)
        if transport.port is not None:
            transport.port.closed(reason)
        await transport.ended(limits.open_timeout)

    async def _first_audio(self, conn: _Connection) -> tuple[int | None, bytes, list[str]]:
        """Wait for the first audio message (its kind is the call's rate); keep early digits."""
        digits: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.start_timeout
        while True:
            msg = await conn.next(max(0.0, deadline - loop.time()))
            if msg is None or msg.kind == wire.HANGUP:
                return None, b"", digits
            if msg.kind in wire.RATES:
                _check_audio(msg)
                return msg.kind, msg.payload, digits
            if msg.kind == wire.DTMF:
                if len(digits) < EARLY_DIGITS:
                    digits.append(wire.digit_of(msg))
            elif msg.kind == wire.ERROR:
                raise AudioSocketError(f"Asterisk reported error {msg.payload.hex() or 'without a code'}")
            else:
                raise AudioSocketError(f"kind 0x{msg.kind:02x} before the first audio")

    async def _run(self, conn: _Connection, transport: AudioSocketTransport) -> str:
        limits = self.limits
        while True:
            try:
                msg = await conn.next(limits.idle_timeout)
            except TimeoutError:
                return end_reason(PEER_GONE, "silent")
            except AudioSocketError as exc:
                transport.faults += 1
                return f"truncated: {exc}"
            except (ConnectionError, OSError) as exc:
                return end_reason(PEER_GONE, f"connection lost ({type(exc).__name__})")
            if msg is None:
                return end_reason(PEER_GONE, "connection closed without a hangup")
            kind = msg.kind
            try:
                if kind == transport.audio_kind:
                    _check_audio(msg)
                    transport.receive_audio(msg.payload)
                elif kind == wire.DTMF:
                    transport.receive_digit(wire.digit_of(msg))
                elif kind == wire.HANGUP:
                    return HANGUP
                elif kind == wire.ERROR:
                    return f"asterisk error {msg.payload.hex() or 'without a code'}"
                elif kind in wire.RATES:
                    raise AudioSocketError(f"audio kind 0x{kind:02x} on a 0x{transport.audio_kind:02x} call")
                else:
                    raise AudioSocketError(f"unknown kind 0x{kind:02x}")
            except AudioSocketError as exc:
                transport.faults += 1
                self.faults += 1
                if transport.faults <= 5:
                    log.warning("x %s: dropped a message (%d so far): %s", transport.name, transport.faults, exc)
                if transport.faults >= limits.max_faults:
                    return f"malformed: {exc}"


def _check_audio(msg: Message) -> None:
    if not msg.payload or len(msg.payload) % 2:
        raise AudioSocketError(f"audio of {len(msg.payload)} bytes is not whole 16-bit samples")


def agents_by_uuid(entries: Iterable[str]) -> dict[uuid.UUID, str]:
    """``audiosocket_agents`` entries, ``"<uuid>=<agent>"``: the dialplan picks
    the agent by the UUID it passes to ``AudioSocket()``."""
    out: dict[uuid.UUID, str] = {}
    for entry in entries:
        key, sep, agent = entry.partition("=")
        try:
            if not sep or not agent.strip():
                raise ValueError("no agent")
            out[uuid.UUID(key.strip())] = agent.strip()
        except ValueError as exc:
            raise ConfigError(f"audiosocket_agents: {entry!r} is not <uuid>=<agent> ({exc})") from exc
    return out


def door(config: Any) -> Door:
    server = AudioSocketServer(getattr(config, "audiosocket_host", "127.0.0.1"),
                               getattr(config, "audiosocket_port", DEFAULT_PORT), limits_from(config),
                               agents_by_uuid(getattr(config, "audiosocket_agents", ())))
    return Door("audiosocket", start=server.start, stop=server.stop, handle=server)
