"""The transport contract: what every way into voxline declares and implements.

A transport turns one connection (a peer connection, an RTP stream, a WebSocket
media stream, an AudioSocket TCP stream) into a source and a sink of frames. It
does not decode, resample, pace or detect speech: it *declares* its wire media
and how its peer takes audio, and ``Runtime.open(session, transport)`` builds the
same pipeline for every transport from that declaration::

    port.receive() -> decode -> resample in -> VAD -> agent
                   -> resample out -> playout -> encode -> transport.send()

Each of those is an ordinary stage, so budgets, per-stage stats and tests cover
the whole path whatever the transport.

What a transport declares (``TransportTraits``):

- ``media``: the codec on the wire (from the codec registry; ``L16`` at the
  library's rate where a library decodes for us, as aiortc does) and the frame
  duration. Inbound it hands over ``Payload`` (or ``Audio`` for L16-decoded
  media); outbound it gets what ``Encode`` made of each frame.
- ``sink``: ``PUSH`` — voxline paces (RTP, WebSocket streams, AudioSocket):
  playout sends frame k at its slot and the transport writes it at once; or
  ``PULL`` — the peer's side takes frames (aiortc's ``recv()``): the transport
  asks ``port.pull()``, which answers in the frame's slot. Playout is the only
  pacer either way.
- ``far_end_buffer``: seconds of audio the far end holds before the caller hears
  it (push sinks): what counts as heard lags what was sent by that much.
- ``can_clear`` / ``confirms_playout`` / ``dtmf_out``: whether ``clear()`` drops
  audio queued at the far end (Twilio ``clear``, Vonage/Plivo ``clearAudio``;
  AudioSocket has none), whether the peer confirms what was played (Twilio and
  Telnyx marks, Plivo checkpoints: ``port.played(name)``), and whether
  ``send_dtmf`` works.

What the runtime gives the transport: a ``Port`` (``attach(port)``, once, before
any media), through which inbound frames, the connection's state and the peer's
playout confirmations arrive. The transport never holds the pipeline.

Front doors. A transport that accepts calls has a ``Door``: HTTP routes (the
WebRTC offer, a WebSocket stream) and/or a listener it starts (SIP, AudioSocket).
Doors are registered by name in ``voxline.transports.DOORS``; the control app
mounts their routes (with authentication and the OpenAPI document) and starts
their listeners, so a new transport is one module here and one registration
line. A door admits a call through ``Service.admit`` — the one admission every
front door shares — and turns a ``Refused`` into its own terms (HTTP 503 +
Retry-After or 429, SIP 486/503, WebSocket close 1013, AudioSocket hangup).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from voxline.codecs import Codec
from voxline.media.frames import Audio, Dtmf, Frame, Payload

__all__ = [
    "SinkMode",
    "WireMedia",
    "TransportTraits",
    "Transport",
    "Port",
    "Refused",
    "BadRequest",
    "Unauthorized",
    "Unsupported",
    "Conflict",
    "NotFound",
    "Call",
    "Service",
    "DoorRoute",
    "Door",
    "HANGUP",
    "PEER_GONE",
    "end_reason",
    "is_peer_end",
]


class SinkMode(enum.Enum):
    PUSH = "push"  # voxline paces; the transport writes each frame as it comes
    PULL = "pull"  # the peer's clock takes frames: the transport calls port.pull()


@dataclass(frozen=True, slots=True)
class WireMedia:
    """The audio on the wire: one codec both ways, in frames of ``frame_ms``.

    ``decoded``: the transport's library decodes and encodes for us (aiortc's
    Opus): frames cross the port as ``Audio`` at ``codec.rate`` and the pipeline
    has no codec stages.
    """

    codec: Codec
    frame_ms: int = 20
    decoded: bool = False

    def __post_init__(self) -> None:
        if self.frame_ms <= 0 or (self.codec.rate * self.frame_ms) % 1000:
            raise ValueError(f"a {self.frame_ms} ms frame is not a whole number of {self.codec.rate} Hz samples")

    @property
    def rate(self) -> int:
        return self.codec.rate

    @property
    def frame_samples(self) -> int:
        return self.codec.rate * self.frame_ms // 1000


@dataclass(frozen=True, slots=True)
class TransportTraits:
    media: WireMedia
    sink: SinkMode = SinkMode.PUSH
    peer_paced: bool = True  # the peer sends audio in real time (False: as fast as it can)
    far_end_buffer: float = 0.0  # seconds the far end holds before the caller hears (push)
    can_clear: bool = False
    confirms_playout: bool = False
    dtmf_out: bool = False


class Unsupported(Exception):
    """The transport (or agent) cannot do this; the message says why, for the caller."""


HANGUP = "hangup"
PEER_GONE = "peer gone"


def end_reason(kind: str, how: str = "") -> str:
    """``HANGUP`` or ``PEER_GONE``, with how it showed: ``"hangup: BYE"``."""
    return f"{kind}: {how}" if how else kind


def is_peer_end(reason: str) -> bool:
    """Whether ``reason`` says the far end hung up or vanished (not a fault)."""
    return reason.partition(":")[0] in (HANGUP, PEER_GONE)


class Refused(Exception):
    """Admission will not take this call now. ``code`` is one of ``not_ready``,
    ``draining``, ``capacity`` (the service's own state) or ``rate_limited``,
    ``token_limit``, ``pending_limit``, ``tenant_limit`` (this caller's share:
    ``caller_limit`` is true); each front door says so in its own terms.
    ``retry_after`` is in seconds."""

    CALLER_CODES = frozenset({"rate_limited", "token_limit", "pending_limit", "tenant_limit"})

    def __init__(self, code: str, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.retry_after = retry_after

    @property
    def caller_limit(self) -> bool:
        return self.code in self.CALLER_CODES


class BadRequest(ValueError):
    """The caller's request is wrong: ``field`` names what (an HTTP door answers 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class Conflict(Exception):
    """The request does not fit the state of what it names (a session that is not
    a SIP call, a transfer already under way): an HTTP door answers 409 with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotFound(Exception):
    """What the request names does not exist (or is another tenant's): HTTP 404."""


class Unauthorized(Exception):
    """The credentials a door was given are missing or wrong; the message says
    which (a WebSocket stream answers 401 before the upgrade, or closes 1008)."""


@runtime_checkable
class Port(Protocol):
    """The runtime's side of one call, as a transport sees it."""

    def receive(self, frame: Audio | Payload | Dtmf) -> None:
        """Inbound media or a digit. Never blocks; never raises for bad media."""
        ...

    def connected(self) -> None:
        """Media flows: the session becomes active."""
        ...

    def closed(self, reason: str) -> None:
        """The peer went away (or the transport failed): the session ends.

        ``HANGUP`` when the far end ended the call (BYE, stop, a clean close);
        ``PEER_GONE`` when it vanished (a timeout, ICE or consent failure, a
        reset); either may say how after a colon (``"peer gone: RTP
        inactivity"``, ``end_reason`` builds it). Anything else is a transport
        fault, named; the session's end reason is then ``"transport closed: ..."``."""
        ...

    def played(self, name: str) -> None:
        """The peer confirmed that the audio before mark ``name`` was played."""
        ...

    async def pull(self) -> Audio | None:
        """Pull sinks: the next outbound frame, returned in its slot (None: silence)."""
        ...


@runtime_checkable
class Transport(Protocol):
    kind: str  # "webrtc", "loopback", "sip", ...: the session's transport label
    traits: TransportTraits

    def attach(self, port: Port) -> None:
        """Called once by the runtime, before the pipeline starts."""
        ...

    def send(self, frame: Frame) -> None:
        """The pipeline's sink: encoded audio (push sinks), ``Mark``, ``Interrupt``
        (drop what is queued: ``clear()``), ``EndOfStream``. Never raises."""
        ...

    def clear(self) -> int:
        """Drop outbound audio not yet played (here and, if ``can_clear``, at the
        far end); return the frames dropped here."""
        ...

    def send_dtmf(self, digits: str) -> None:
        """Send digits to the peer; ``Unsupported`` if the transport cannot."""
        ...

    async def close(self) -> None:
        """End the connection. Idempotent; bounded in time."""
        ...

    def stats(self) -> dict[str, Any]: ...


class Call(Protocol):
    """An admitted call, as a door sees it (a control Session)."""

    id: str
    agent_kind: str
    extra: dict[str, Any]  # what the door knows of the call: "peer" (for its record)

    async def end(self, reason: str) -> None: ...


class Service(Protocol):
    """What a front door may use of the service."""

    @property
    def agents(self) -> tuple[str, ...]: ...

    @property
    def config(self) -> Any: ...

    def authenticate(self, token: str | None) -> Any:
        """The identity (``.tenant``, ``.token_id``) a bare bearer token stands for,
        for doors whose peers cannot send an ``Authorization`` header (a token in
        the query, in a stream's start message); ``Unauthorized`` if it stands for
        none. Anonymous when the service has no credentials configured."""
        ...

    def admit(self, transport: str, agent: str | None, *, tenant: str, key: str | None) -> Call:
        """Admit one call (``Refused`` if not). ``key`` is the caller whose share
        (creation rate, concurrent and pending sessions) it counts against: a
        token id. ``None`` for a peer trusted by its address that carries many
        people's calls (a SIP trunk, a media server): only the service's capacity
        applies, and the door bounds its peers itself (allow-list, per-source
        rate). Each front door calls this and nothing else."""
        ...

    async def open(self, call: Call, transport: Transport) -> None:
        """Build the call's pipeline on ``transport`` and start it."""
        ...

    def session(self, session_id: str, tenant: str) -> Call | None:
        """This tenant's session ``session_id`` (any transport), or None."""
        ...


Handler = Callable[..., Awaitable[Any]]  # (request, service, identity) -> web.StreamResponse


@dataclass(frozen=True, slots=True)
class DoorRoute:
    """An HTTP route a door adds to the control API (authenticated unless ``auth``
    is False), described in the OpenAPI document from these fields."""

    method: str
    path: str
    handler: Handler
    name: str  # operationId
    summary: str
    request: str | None = None  # a schema name in the door's ``schemas``
    replies: Mapping[int, tuple[str, str | None]] = field(default_factory=dict)  # status -> (description, schema)
    auth: bool = True


@dataclass(frozen=True, slots=True)
class Door:
    """A transport's front door: routes, schemas for them, and an optional
    listener (``start(service)`` / ``stop()``) for socket servers."""

    name: str
    routes: tuple[DoorRoute, ...] = ()
    schemas: Callable[[tuple[str, ...]], dict[str, dict[str, Any]]] | None = None  # agents -> schemas
    start: Callable[[Service], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None
    handle: Any = None  # the door's own interface for in-process use (e.g. loopback's dial)
