"""Calls out and transfers over SIP: the HTTP routes, and what a call out holds
before it is answered.

``POST /v1/calls {"to": "sip:user@host[:port]", "agent"?, "from"?}`` admits a
session exactly as every door does (the caller's token is its key), sends the
INVITE and answers 201 with the session id at once; the session is pending
while the call rings, active once answered, and ends with the reason the call
gave ("rejected: 486 Busy Here", "no answer", "no response (timeout)",
"authentication failed: ..."). Ending it while it rings sends CANCEL.

``POST /v1/sessions/{id}/transfer {"to": "sip:..."}`` REFERs the peer of an
answered SIP call to ``to`` and answers 202; progress shows in the session's
events (``transfer``), and the session ends "transferred" when the peer's new
call is answered. 409 for a session that is not a SIP call (or not answered
yet, or already being transferred).

Targets: an IP address or a name resolved here (``resolve``, with a deadline),
over UDP, or over TCP for a URI with ``;transport=tcp`` (the connection is
opened before the session is admitted: a refused one is a 400); through ``sip_outbound_proxy`` when one is set. ``sip_dial_allow``
(networks) bounds where calls may go when there is no proxy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

from .base import BadRequest, Conflict, NotFound, Service
from .rtp.ports import PortAllocator, PortPair
from .rtp_call import RtpSocket
from .sip.address import NameAddr, parse_name_addr
from .sip.errors import SipParseError
from .sip.uac import OutgoingCall
from .sip.uri import SipUri, parse_uri

__all__ = ["Dialing", "Outgoing", "resolve", "parse_target", "routes", "schemas", "RESOLVE_TIMEOUT"]

RESOLVE_TIMEOUT = 2.0  # s for a target's name to resolve
MAX_URI = 256
EXAMPLE_TO = "sip:echo@127.0.0.1:5060"


async def resolve(hostport: str, default_port: int = 5060) -> tuple[str, int]:
    """``host[:port]`` -> an address to send to (IPv4 first); OSError when it has none."""
    uri = parse_uri(f"sip:{hostport}")
    assert isinstance(uri, SipUri)
    host, port = uri.host.strip("[]"), uri.port or default_port
    try:
        ipaddress.ip_address(host)
        return host, port
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except TimeoutError as exc:
        raise OSError(f"{host}: not resolved within {RESOLVE_TIMEOUT:.0f} s") from exc
    if not infos:
        raise OSError(f"{host}: no address")
    infos.sort(key=lambda i: i[0] != socket.AF_INET)
    return str(infos[0][4][0]), port


def parse_target(text: object, field_name: str = "to") -> SipUri:
    """A ``sip:`` URI to call; ``BadRequest`` naming the field otherwise."""
    if not isinstance(text, str) or len(text) > MAX_URI:
        raise BadRequest(field_name, f"{field_name} must be a sip: URI of at most {MAX_URI} characters")
    try:
        uri = parse_uri(text.strip(), field_name)
    except SipParseError as exc:
        raise BadRequest(field_name, f"{field_name}: {exc}") from exc
    if not isinstance(uri, SipUri) or uri.scheme != "sip" or uri.headers:
        raise BadRequest(field_name, f"{field_name} must be a sip: URI (no sips:, no headers), not {text[:60]!r}")
    if uri.transport not in (None, "UDP", "TCP"):
        raise BadRequest(field_name, f"{field_name}: calls out go over UDP or TCP, not {uri.transport}")
    return uri


def parse_from(text: object) -> NameAddr | None:
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > MAX_URI:
        raise BadRequest("from", f"from must be a SIP address of at most {MAX_URI} characters")
    try:
        addr = parse_name_addr(text.strip(), "from")
    except SipParseError as exc:
        raise BadRequest("from", f"from: {exc}") from exc
    if not isinstance(addr.uri, SipUri) or addr.params:
        raise BadRequest("from", "from must be a sip: URI, optionally with a display name, without parameters")
    return addr


@dataclass(eq=False, slots=True)
class Outgoing:
    """A call out not answered yet: its session and the RTP sockets its offer names."""

    session: Any
    pair: PortPair
    rtp: RtpSocket
    rtcp: RtpSocket | None
    ports: PortAllocator
    call: OutgoingCall | None = None
    released: bool = field(default=False)

    def release(self) -> None:
        """Close the sockets and give the port pair back (once)."""
        if self.released:
            return
        self.released = True
        self.rtp.close()
        if self.rtcp is not None:
            self.rtcp.close()
        self.ports.release(self.pair)


class Dialing:
    """The session's endpoint while its call rings: closing it cancels the call."""

    def __init__(self, door: Any, pending: Outgoing) -> None:
        self.door = door
        self.pending = pending

    async def close(self) -> None:
        self.door.cancel_outgoing(self.pending)

    def stats(self) -> dict[str, Any]:
        call = self.pending.call
        return {"sip": call.state.value if call else "starting", "sip_call_id": call.call_id if call else None,
                "status": call.status if call else None, "to": str(call.uri) if call else None,
                "local_port": self.pending.pair.rtp}


# -- routes -------------------------------------------------------------------------


def schemas(agents: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    uri = {"type": "string", "minLength": 5, "maxLength": MAX_URI, "pattern": "^sip:[^\\s]+$"}
    return {
        "CallRequest": {
            "type": "object",
            "required": ["to"],
            "additionalProperties": False,
            "properties": {
                "to": uri,
                "agent": {"type": "string", "enum": list(agents)},
                "from": {"type": "string", "minLength": 5, "maxLength": MAX_URI},
            },
            "examples": [{"to": EXAMPLE_TO, "agent": agents[0]}],
        },
        "CallCreated": {
            "type": "object",
            "required": ["session_id", "sip_call_id", "to"],
            "properties": {
                "session_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "sip_call_id": {"type": "string", "description": "the SIP Call-ID of the INVITE"},
                "to": {"type": "string"},
            },
        },
        "TransferRequest": {
            "type": "object",
            "required": ["to"],
            "additionalProperties": False,
            "properties": {"to": uri},
            "examples": [{"to": "sip:operator@127.0.0.1:5060"}],
        },
        "TransferAccepted": {
            "type": "object",
            "required": ["session_id", "to", "state"],
            "properties": {
                "session_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "to": {"type": "string"},
                "state": {"type": "string", "enum": ["referring"]},
            },
        },
    }


def route_handlers(door: Any) -> tuple[Any, Any]:
    """The two handlers, bound to ``door`` (a ``sip_door.SipDoor``)."""

    async def create_call(request: Any, body: dict[str, Any], service: Service, identity: Any
                          ) -> tuple[int, dict[str, Any], dict[str, str]]:
        to = parse_target(body["to"])
        from_ = parse_from(body.get("from"))
        dest = await door.first_hop(to)
        session = service.admit("sip", body.get("agent"), tenant=identity.tenant, key=identity.token_id)
        session.extra["peer"] = str(to)  # for the call's record: whom it called
        try:
            call = await door.dial(session, to, from_, dest)
        except BaseException as exc:
            reason = "bad target" if isinstance(exc, BadRequest) else "dial failed"
            await session.end(getattr(exc, "message", None) or reason)
            raise
        return 201, {"session_id": session.id, "sip_call_id": call.call_id, "to": str(to)}, \
            {"Location": f"/v1/sessions/{session.id}"}

    async def transfer(request: Any, body: dict[str, Any], service: Service, identity: Any
                       ) -> tuple[int, dict[str, Any], dict[str, str]]:
        sid = request.match_info["session_id"]
        session = service.session(sid, identity.tenant)
        if session is None:
            raise NotFound(f"no session {sid}")
        to = parse_target(body["to"])
        if getattr(session, "transport", None) != "sip":
            raise Conflict("not_sip", f"session {sid} is not a SIP call ({getattr(session, 'transport', '?')})")
        door.transfer(session, to)
        return 202, {"session_id": sid, "to": str(to), "state": "referring"}, {}

    return create_call, transfer


def routes(door: Any) -> tuple[Any, ...]:
    from .base import DoorRoute

    create_call, transfer = route_handlers(door)
    return (
        DoorRoute("POST", "/v1/calls", create_call, "createCall",
                  "Place a SIP call (INVITE with an SDP offer); the session is pending while it rings",
                  request="CallRequest",
                  replies={201: ("Call placed (ringing); the session ends with the reason if it fails",
                                 "CallCreated"),
                           409: ("SIP is not listening", "Error")}),
        DoorRoute("POST", "/v1/sessions/{session_id}/transfer", transfer, "transferSession",
                  "Blind-transfer an answered SIP call (REFER); the session ends 'transferred' on success",
                  request="TransferRequest",
                  replies={202: ("REFER sent; progress arrives as transfer events", "TransferAccepted"),
                           409: ("Not a SIP call, not answered yet, or a transfer already under way", "Error")}),
    )
