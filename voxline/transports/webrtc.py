"""WebRTC transport: a browser's peer connection as a source and a sink of Audio frames.

Signalling is non-trickle: ``accept(offer)`` gathers every local candidate (within
``gather_timeout``) and answers with all of them, so a control route is one POST.
Remote audio comes out of ``on_audio`` as 20 ms mono ``Audio`` at ``inbound_rate``;
audio going back is asked of ``outbound.source`` frame by frame (see Outbound).

ICE hosts: aioice 0.13 offers the interfaces' addresses minus 127.0.0.1 and ::1,
with no option to add or pin any, so where loopback is the only interface a local
browser cannot connect. ``ice_hosts`` adds host candidates; ``ice_scan_interfaces
=False`` offers those only. ``gather_candidates`` is the one place that does it.

Inbound: aiortc hands decoded frames over through an unbounded ``asyncio.Queue``.
A reader task empties it as frames arrive (``recv()`` on a non-empty queue does
not yield) into a buffer of ``inbound_capacity`` frames that a second task hands
to ``on_audio``. After a slow consumer (an awaitable ``on_audio``) or a stalled
loop, the backlog overflows that buffer and the *oldest* frames are dropped and
counted: the pipeline resumes at the present, not seconds behind.

Outbound: aiortc sends whatever ``OutboundTrack.recv()`` returns at once; the
track asks its ``source`` for each frame, and in a call the source is playout's
``pull()``, which answers in the frame's slot: one pacer, and a frame counts as
heard when aiortc takes it (``voxline.transports.webrtc_call`` puts a call on this
endpoint).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from ..media.clock import Clock, LoopClock
from ..media.frames import Audio
from .webrtc_media import AudioCallback, InboundReader, OutboundTrack, Source, WebRTCStats

__all__ = ["AudioCallback", "InboundReader", "OutboundTrack", "Source", "WebRTCConfig", "WebRTCEndpoint",
           "WebRTCStats", "gather_candidates", "validate_offer"]

log = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class WebRTCConfig:
    """One endpoint's settings. Capacities are in frames of ``frame_ms``."""

    ice_hosts: tuple[str, ...] = ()  # extra host candidate addresses, e.g. ("127.0.0.1",)
    ice_scan_interfaces: bool = True  # False: offer ice_hosts only
    stun_servers: tuple[str, ...] = ()  # "stun:host:port"; none by default, so nothing leaves unasked
    max_sdp_bytes: int = 64 * 1024
    inbound_rate: int = 16000
    outbound_rate: int = 48000  # what aiortc's Opus encoder runs at: no second resampling
    frame_ms: int = 20
    inbound_capacity: int = 10  # 200 ms between aiortc and on_audio
    gather_timeout: float = 5.0
    connect_timeout: float = 15.0
    deliver_timeout: float = 1.0  # an awaitable on_audio taking longer loses that frame
    close_timeout: float = 5.0

    def __post_init__(self) -> None:
        for host in self.ice_hosts:
            ipaddress.ip_address(host)  # ValueError: "... does not appear to be an IPv4 or IPv6 address"
        if not self.ice_scan_interfaces and not self.ice_hosts:
            raise ValueError("ice_scan_interfaces=False needs ice_hosts, or no host candidate is offered")
        for name in ("inbound_rate", "outbound_rate", "frame_ms", "inbound_capacity"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if (self.inbound_rate * self.frame_ms) % 1000 or (self.outbound_rate * self.frame_ms) % 1000:
            raise ValueError(f"a {self.frame_ms} ms frame must be a whole number of samples")

MAX_MEDIA = 8  # m-lines: a browser sends audio, perhaps video and a data channel
MAX_CANDIDATES = 64  # remote ICE candidates: each one adds pairs to check
MAX_LINES = 1000
MAX_LINE = 4096  # characters in one SDP line


def validate_offer(sdp: object, sdp_type: object = "offer", max_bytes: int = 64 * 1024) -> str:
    """Return ``sdp`` if it can be an SDP offer with audio; raise ValueError saying why not.

    Everything is checked here, in one pass over the text, before aiortc sees it:
    aiortc builds a receiver and estimators per m-line and asserts on missing DTLS
    parameters, so an offer with hundreds of m-lines stalls the event loop for
    seconds and one without a fingerprint fails inside it."""
    if sdp_type != "offer":
        raise ValueError(f"WebRTC description type must be 'offer', got {sdp_type!r}")
    if not isinstance(sdp, str):
        raise ValueError(f"WebRTC offer must be SDP text, got {type(sdp).__name__}")
    size = len(sdp.encode("utf-8", "replace"))
    if size > max_bytes:
        raise ValueError(f"WebRTC offer is {size} bytes, more than the {max_bytes} allowed")
    if not sdp.startswith("v=0"):
        raise ValueError("WebRTC offer is not SDP: it does not start with 'v=0'")
    if "\x00" in sdp:
        raise ValueError("WebRTC offer contains a NUL character")
    lines = sdp.splitlines()
    if len(lines) > MAX_LINES:
        raise ValueError(f"WebRTC offer has {len(lines)} lines, more than the {MAX_LINES} allowed")
    media = audio = candidates = 0
    fingerprint = ufrag = pwd = False
    for line in lines:
        if len(line) > MAX_LINE:
            raise ValueError(f"WebRTC offer has a line of {len(line)} characters, more than {MAX_LINE}")
        if line.startswith("m="):
            media += 1
            audio += line.startswith("m=audio ")
        elif line.startswith("a=candidate:"):
            candidates += 1
        elif line.startswith("a=fingerprint:"):
            fingerprint = True
        elif line.startswith("a=ice-ufrag:"):
            ufrag = True
        elif line.startswith("a=ice-pwd:"):
            pwd = True
    if media > MAX_MEDIA:
        raise ValueError(f"WebRTC offer has {media} m-lines, more than the {MAX_MEDIA} allowed")
    if candidates > MAX_CANDIDATES:
        raise ValueError(f"WebRTC offer has {candidates} ICE candidates, more than the {MAX_CANDIDATES} allowed")
    if not audio:
        raise ValueError("WebRTC offer has no audio m-line")
    if not fingerprint:
        raise ValueError("WebRTC offer has no a=fingerprint: DTLS needs the peer's certificate fingerprint")
    if not (ufrag and pwd):
        raise ValueError("WebRTC offer lacks a=ice-ufrag or a=ice-pwd")
    return sdp


async def gather_candidates(pc: RTCPeerConnection, hosts: Sequence[str] = (), *,
                            scan_interfaces: bool = True) -> None:
    """Gather ``pc``'s ICE candidates now, with host candidates on ``hosts`` too.

    Call it once the transceivers exist and before ``setLocalDescription``, which
    then finds gathering complete and writes these candidates into the SDP.

    The one adaptation to aioice, which has no supported way to add addresses (pion
    has ``IncludeLoopback``). Nothing is patched: via ``RTCIceGatherer._connection``
    it calls aioice's public ``get_component_candidates(component, addresses)``
    (binds a socket per address, registered with the connection) and appends the
    result to ``Connection._local_candidates``; ``scan_interfaces=False`` first sets
    ``_local_candidates_start``/``_end``, which makes aioice's own scan a no-op. If
    an upgrade renames these, it raises rather than silently offer nothing.
    """
    transports = [t.receiver.transport for t in pc.getTransceivers()] + ([pc.sctp.transport] if pc.sctp else [])
    gatherers: dict[int, Any] = {id(t.transport.iceGatherer): t.transport.iceGatherer for t in transports}
    for gatherer in gatherers.values():
        if gatherer.state != "new":
            continue
        if not hosts and scan_interfaces:
            await gatherer.gather()  # aiortc's own behaviour, untouched
            continue
        conn = getattr(gatherer, "_connection", None)
        names = ("_local_candidates", "_local_candidates_start", "_local_candidates_end")
        if conn is None or not all(hasattr(conn, n) for n in names):
            raise RuntimeError("aiortc/aioice internals changed (RTCIceGatherer._connection, "
                               "Connection._local_candidates*): ice_hosts cannot be applied")
        if scan_interfaces:
            await gatherer.gather()
        else:
            conn._local_candidates_start = conn._local_candidates_end = True
        have = {c.host for c in conn.local_candidates}
        extra = [h for h in hosts if h not in have]
        conn._local_candidates.extend(await conn.get_component_candidates(component=1, addresses=extra))
        await gatherer.gather()  # state -> "completed"; aioice's scan is done or skipped


class WebRTCEndpoint:
    """One browser call: ``accept`` an offer, get audio via ``on_audio``, ``send`` audio back."""

    def __init__(self, config: WebRTCConfig | None = None, *, on_audio: AudioCallback | None = None,
                 on_state: Callable[[str], None] | None = None, clock: Clock | None = None,
                 name: str = "webrtc") -> None:
        self.config = cfg = config or WebRTCConfig()
        self.on_audio, self.on_state, self.name = on_audio, on_state, name
        self.state = "new"
        self._clock: Clock = clock or LoopClock()
        self._stats = WebRTCStats()
        self.outbound = OutboundTrack(rate=cfg.outbound_rate, frame_ms=cfg.frame_ms, clock=self._clock,
                                      stats=self._stats)
        self.inbound: InboundReader | None = None
        self._pc: RTCPeerConnection | None = None
        self._connected = False
        self._settled, self._closed = asyncio.Event(), asyncio.Event()  # settled: connected, or closed first
        self._watchdog: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    async def accept(self, offer_sdp: str, sdp_type: str = "offer") -> str:
        """Answer a browser's offer; return the answer SDP with every candidate in it.

        ValueError: the offer is not acceptable (the caller's fault). TimeoutError:
        gathering overran ``gather_timeout``. Either way the endpoint is closed.
        """
        cfg = self.config
        validate_offer(offer_sdp, sdp_type, cfg.max_sdp_bytes)
        if self._pc is not None or self._closing is not None:
            raise RuntimeError(f"{self.name}: accept() was already called")
        servers = [RTCIceServer(url) for url in cfg.stun_servers]  # [], not None: no default STUN
        self._pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        pc.on("connectionstatechange", self._on_pc_state)
        pc.on("track", self._on_track)
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            except Exception as exc:  # aiortc raises ValueError, KeyError, InternalError... on bad SDP
                raise ValueError(f"WebRTC offer rejected: {exc or type(exc).__name__}") from exc
            audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
            if not audio:
                raise ValueError("WebRTC offer has no usable audio m-line")
            for t in pc.getTransceivers():
                if t is not audio[0]:
                    t.direction = "inactive"  # nobody would read it: aiortc's queue would grow
            pc.addTrack(self.outbound)
            try:
                answer = await pc.createAnswer()
            except Exception as exc:
                raise ValueError(f"WebRTC offer has nothing we can answer: {exc}") from exc
            gather = gather_candidates(pc, cfg.ice_hosts, scan_interfaces=cfg.ice_scan_interfaces)
            await asyncio.wait_for(gather, cfg.gather_timeout)
            await asyncio.wait_for(pc.setLocalDescription(answer), cfg.gather_timeout)
            sdp: str = pc.localDescription.sdp
            if "a=candidate:" not in sdp:
                raise RuntimeError(f"{self.name}: no ICE candidate could be gathered (set ice_hosts?)")
        except BaseException:
            await self.close()
            raise
        log.info("%s: answered offer (%d bytes)", self.name, len(offer_sdp))
        log.debug("> %s: answer\n%s", self.name, sdp)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch_connect(),
                                                                name=f"voxline:{self.name}:webrtc-connect")
        return sdp

    async def wait_connected(self, timeout: float) -> None:
        """Wait until connected. TimeoutError past ``timeout``; ConnectionError if closed first."""
        await asyncio.wait_for(self._settled.wait(), timeout)
        if not self._connected:
            raise ConnectionError(f"{self.name}: closed ({self.state}) before connecting")

    async def wait_closed(self, timeout: float) -> None:
        """Wait until the endpoint has closed (failure, connect timeout, or close())."""
        await asyncio.wait_for(self._closed.wait(), timeout)

    def stats(self) -> WebRTCStats:
        return dataclasses.replace(self._stats)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio" or self.inbound is not None:
            return
        cfg = self.config
        self.inbound = InboundReader(track, self._deliver, rate=cfg.inbound_rate, frame_ms=cfg.frame_ms,
                                     capacity=cfg.inbound_capacity, deliver_timeout=cfg.deliver_timeout,
                                     clock=self._clock, stats=self._stats, name=self.name)
        self.inbound.start()

    def _deliver(self, audio: Audio) -> Awaitable[None] | None:
        # Looked up per frame so on_audio can be set after accept().
        return None if self.on_audio is None else self.on_audio(audio)

    def _on_pc_state(self) -> None:
        if self._pc is None:
            return
        state = self._pc.connectionState
        self._report(state)
        if state == "connected":
            self._connected = True
            self._settled.set()
        elif state == "failed":
            self._close_soon()

    def _report(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        log.info("%s: connection %s", self.name, state)
        if self.on_state is not None:
            try:
                self.on_state(state)
            except Exception:
                log.exception("%s: on_state callback failed", self.name)

    async def _watch_connect(self) -> None:
        try:
            await asyncio.wait_for(self._settled.wait(), self.config.connect_timeout)
        except TimeoutError:
            log.warning("%s: not connected within %.1fs", self.name, self.config.connect_timeout)
            self._report("failed")
            self._close_soon()

    def _close_soon(self) -> None:
        if self._closing is None:
            name = f"voxline:{self.name}:webrtc-close"
            self._closing = asyncio.get_running_loop().create_task(self._close(), name=name)

    async def close(self) -> None:
        """Stop the tasks and the peer connection. Idempotent; concurrent callers share one close."""
        self._close_soon()
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        timeout, watchdog = self.config.close_timeout, self._watchdog
        if watchdog is not None and watchdog is not asyncio.current_task() and not watchdog.done():
            watchdog.cancel()
            await asyncio.wait([watchdog], timeout=timeout)
        if self.inbound is not None:
            await self.inbound.stop(timeout)
        self.outbound.stop()
        if self._pc is not None:
            try:
                await asyncio.wait_for(self._pc.close(), timeout)
            except Exception:
                log.exception("%s: closing the peer connection failed", self.name)
        self._report("closed")
        self._settled.set()
        self._closed.set()
