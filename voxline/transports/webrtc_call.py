"""A call over WebRTC: the endpoint as a ``Transport``, and its front door.

The wire, as the pipeline sees it, is 48 kHz PCM in 20 ms frames: aiortc decodes
and encodes Opus itself (``decoded``), so the pipeline resamples 48 -> 16 kHz
inbound and the agent's voice -> 48 kHz outbound as ordinary stages. The sink is
*pull*: aiortc's sender asks the outgoing track for each frame, and the track
asks playout (``port.pull()``), which answers in the frame's slot — so a frame
counts as heard exactly when the peer connection takes it.

The door is ``POST /v1/webrtc/offer``: one admission, one answer with every ICE
candidate in it (non-trickle).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from voxline.codecs import l16

from voxline.media.frames import Frame

from .base import HANGUP, PEER_GONE, BadRequest, Door, DoorRoute, Port, Service, SinkMode, TransportTraits, Unsupported, WireMedia
from .webrtc import WebRTCConfig, WebRTCEndpoint, validate_offer

__all__ = ["WebRTCTransport", "door", "offer", "OFFER_TIMEOUT"]

log = logging.getLogger(__name__)

RATE = 48000  # what aiortc's Opus runs at: no second resampling
OFFER_TIMEOUT = 15.0  # s to answer an offer (ICE gathering is local)

# A browser-like offer, valid as it stands (the OpenAPI example: it gets a 201).
EXAMPLE_OFFER = (
    "v=0\r\no=- 4005620812 4005620812 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "a=msid-semantic:WMS *\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96 9 0 8\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\n"
    "a=mid:0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=rtcp-mux\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=ice-ufrag:Vu7b\r\na=ice-pwd:JXoyghdmSG4zVWxgavfZ6v\r\n"
    "a=fingerprint:sha-256 AF:8D:E3:EE:20:A3:C6:BA:2F:B8:6C:DD:B8:58:5D:1A:D8:E1:D0:C8:E9:FD:AC:85:62:4F:D8:63:"
    "7A:26:9E:5C\r\na=setup:actpass\r\n"
)


class WebRTCTransport:
    kind = "webrtc"
    traits = TransportTraits(WireMedia(l16(RATE), 20, decoded=True), sink=SinkMode.PULL)

    def __init__(self, config: WebRTCConfig, name: str = "webrtc") -> None:
        self.endpoint = WebRTCEndpoint(config, on_state=self._on_state, name=name)
        self._port: Port | None = None

    def attach(self, port: Port) -> None:
        self._port = port
        self.endpoint.on_audio = port.receive
        self.endpoint.outbound.source = port.pull

    async def accept(self, sdp: object, sdp_type: object = "offer") -> str:
        try:
            return await self.endpoint.accept(sdp, sdp_type)  # type: ignore[arg-type]
        except ValueError as exc:
            raise BadRequest("sdp", f"sdp: {exc}") from exc

    def _on_state(self, state: str) -> None:
        port = self._port
        if port is None:
            return
        if state == "connected":
            port.connected()
        elif state == "failed":  # ICE or DTLS failed, consent lost, or never connected
            port.closed(PEER_GONE)
        elif state == "closed":  # the browser closed its peer connection
            port.closed(HANGUP)

    def send(self, frame: Frame) -> None:
        """Nothing to do: audio is pulled, and playout empties its hand-off on Interrupt."""

    def clear(self) -> int:
        return 0  # the only queued audio is playout's one-frame hand-off

    def send_dtmf(self, digits: str) -> None:
        raise Unsupported("DTMF cannot be sent on a WebRTC call")

    async def close(self) -> None:
        await self.endpoint.close()

    def stats(self) -> dict[str, Any]:
        return self.endpoint.stats().as_dict()


def _schemas(agents: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {
        "WebRtcOffer": {
            "type": "object",
            "required": ["sdp", "type"],
            "additionalProperties": False,
            "properties": {
                "sdp": {"type": "string", "minLength": 1, "maxLength": 64 * 1024, "pattern": "^v=0"},
                "type": {"type": "string", "enum": ["offer"]},
                "agent": {"type": "string", "enum": list(agents)},
            },
            "examples": [{"sdp": EXAMPLE_OFFER, "type": "offer", "agent": agents[0]}],
        },
        "WebRtcAnswer": {
            "type": "object",
            "required": ["session_id", "sdp", "type"],
            "properties": {
                "session_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "sdp": {"type": "string"},
                "type": {"type": "string", "enum": ["answer"]},
            },
        },
    }


async def offer(request: Any, body: dict[str, Any], service: Service, identity: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    try:  # before admission: a bad offer costs no rate token, no slot and no peer connection
        validate_offer(body["sdp"], body.get("type"))
    except ValueError as exc:
        raise BadRequest("sdp", f"sdp: {exc}") from exc
    call = service.admit("webrtc", body.get("agent"), tenant=identity.tenant, key=identity.token_id)
    call.extra["peer"] = request.remote  # for the call's record: who sent the offer
    cfg = service.config
    transport = WebRTCTransport(WebRTCConfig(ice_hosts=tuple(cfg.ice_hosts), inbound_rate=RATE),
                                name=f"webrtc:{call.id}")
    try:
        async with asyncio.timeout(OFFER_TIMEOUT):
            await service.open(call, transport)
            answer = await transport.accept(body["sdp"], body.get("type"))
    except asyncio.CancelledError:
        asyncio.ensure_future(call.end("offer cancelled"))  # the client went away: never leak a session
        raise
    except BaseException as exc:
        reason = "bad offer" if isinstance(exc, BadRequest) else "offer timeout" if isinstance(exc, TimeoutError) \
            else "offer failed"
        await call.end(reason)
        raise
    log.info("webrtc session %s created (tenant %s, agent %s)", call.id, identity.tenant, call.agent_kind,
             extra={"session_id": call.id})
    return 201, {"session_id": call.id, "sdp": answer, "type": "answer"}, {"Location": f"/v1/sessions/{call.id}"}


def door(config: Any) -> Door:
    return Door(
        "webrtc",
        routes=(
            DoorRoute("POST", "/v1/webrtc/offer", offer, "createWebRtcSession",
                      "Start a session from a WebRTC offer (non-trickle ICE); returns the answer",
                      request="WebRtcOffer",
                      replies={201: ("Session created", "WebRtcAnswer"),
                               504: ("The offer was not answered in time", "Error")}),
        ),
        schemas=_schemas,
    )

