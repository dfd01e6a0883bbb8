"""Asterisk ARI external media: a call's audio as plain RTP to a port we reserve.

An ARI application bridges a caller with an External Media channel
(``POST /channels/externalMedia`` with ``external_host``, ``format``,
``encapsulation=rtp``, ``transport=udp``); Asterisk then sends the caller's
audio as RTP to ``external_host`` and plays what comes back from there
(https://docs.asterisk.org/Configuration/Interfaces/Asterisk-REST-Interface-ARI/
ARI-and-Channels-Handling-Media/ and the externalMedia operation of
https://docs.asterisk.org/Latest_API/API_Documentation/Asterisk_REST_Interface/Channels_REST_API/).

``POST /v1/sessions/rtp {"format", "remote"?, "agent"?}`` admits a session,
reserves a port from ``rtp_ports`` (the pool the SIP door uses) on
``sip_host`` and returns it as ``external_host``. There is no signalling: the
session connects when the first packet arrives, answers to the address that
packet came from (symmetric RTP; ``remote`` only says where to send before
anything is heard) and drops packets from anywhere else once it has heard one
(strict RTP). It ends with ``DELETE /v1/sessions/{id}``, or when Asterisk stops
sending for ``rtp_timeout`` seconds (the ARI application hung up the channel),
or, if nothing ever arrives, at the admission's ``pending_timeout``.

Formats are Asterisk's: ``ulaw`` (PCMU, payload type 0), ``alaw`` (PCMA, 8)
and ``slin16`` (16 kHz signed linear, which Asterisk puts on the wire big-endian
as RFC 3551's L16, with the payload type it assigns slin16, 118; ``payload_type``
overrides it for a server configured otherwise).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

from voxline.codecs import PCMA, PCMU, Codec, l16

from .base import BadRequest, Door, DoorRoute, Refused, Service
from .rtp.errors import PortsExhausted
from .rtp.ports import PortAllocator, shared_allocator
from .rtp.session import RtpParams
from .rtp_call import MediaTicker, RtpCallTransport, open_rtp
from .sip_door import parse_port_range

__all__ = ["FORMATS", "ExternalMediaTransport", "door"]

log = logging.getLogger(__name__)

# Asterisk's format name -> (codec, its payload type); slin16's 118 is the type
# Asterisk's RTP engine reserves for it (res/res_rtp_asterisk, rtp_engine.c).
FORMATS: dict[str, tuple[Codec, int]] = {
    "ulaw": (PCMU, 0),
    "alaw": (PCMA, 8),
    "slin16": (l16(16000), 118),
}
OPEN_TIMEOUT = 10.0  # s to build the call's pipeline


class ExternalMediaTransport(RtpCallTransport):
    """An ``RtpCallTransport`` without signalling: connected by its first packet."""

    kind = "rtp"

    def _datagram(self, data: bytes, source: tuple[str, int]) -> None:
        super()._datagram(data, source)
        if self.connected_at is None and not self.closed and self.session.filter.learned is not None:
            self.connect()  # a valid packet latched the source: Asterisk is sending


def _remote(text: Any) -> tuple[str, int] | None:
    if text is None:
        return None
    host, sep, port = str(text).rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise BadRequest("remote", f"remote must be an IP address and port (host:port), not {text!r}") from None
    if not sep or not 1 <= number <= 65535:
        raise BadRequest("remote", f"remote must be an IP address and port (host:port), not {text!r}")
    return host, number


class ExternalMediaDoor:
    def __init__(self, config: Any) -> None:
        self.config = config
        first, last = parse_port_range(config.rtp_ports)
        self.ports: PortAllocator = shared_allocator(first, last)
        self.ticker = MediaTicker()

    def host(self) -> str:
        host = self.config.sip_host
        return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host

    async def reserve(self, request: Any, body: dict[str, Any], service: Service,
                      identity: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        codec, pt = FORMATS[body["format"]]
        pt = int(body.get("payload_type", pt))
        remote = _remote(body.get("remote"))  # before admission: a bad request costs no slot
        call = service.admit("rtp", body.get("agent"), tenant=identity.tenant, key=identity.token_id)
        call.extra["peer"] = f"{remote[0]}:{remote[1]}" if remote is not None else request.remote  # for the record
        host = self.host()
        try:
            pair, rtp, _ = await open_rtp(self.ports, host, rtcp=False)
        except PortsExhausted as exc:
            await call.end("no RTP port")
            raise Refused("capacity", str(exc), 5) from exc
        params = RtpParams(codec, pt, None, 20, remote, None, False, learn_remote=True)
        transport = ExternalMediaTransport(params, pair, rtp, None, release=self.ports.release, ticker=self.ticker,
                                           idle_timeout=self.config.rtp_timeout)
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                await service.open(call, transport)
        except BaseException:
            await call.end("open failed")
            await transport.close()
            raise
        log.info("external media session %s on %s:%d (%s, payload type %d)", call.id, host, pair.rtp,
                 body["format"], pt, extra={"session_id": call.id})
        answer = {"session_id": call.id, "external_host": f"{_join(host, pair.rtp)}", "host": host,
                  "port": pair.rtp, "format": body["format"], "payload_type": pt}
        return 201, answer, {"Location": f"/v1/sessions/{call.id}"}

    async def stop(self) -> None:
        await self.ticker.stop()


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _schemas(agents: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {
        "ExternalMediaRequest": {
            "type": "object",
            "required": ["format"],
            "additionalProperties": False,
            "properties": {
                "format": {"type": "string", "enum": list(FORMATS)},
                "remote": {"type": "string", "maxLength": 64, "pattern": r"^(\[[0-9A-Fa-f:.]+\]|[0-9.]+):[0-9]{1,5}$",
                           "description": "where to send before Asterisk is heard (IP:port)"},
                "payload_type": {"type": "integer", "minimum": 0, "maximum": 127},
                "agent": {"type": "string", "enum": list(agents)},
            },
            "examples": [{"format": "ulaw", "agent": agents[0]}],
        },
        "ExternalMedia": {
            "type": "object",
            "required": ["session_id", "external_host", "host", "port", "format", "payload_type"],
            "properties": {
                "session_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "external_host": {"type": "string", "description": "for the externalMedia channel"},
                "host": {"type": "string"},
                "port": {"type": "integer"},
                "format": {"type": "string", "enum": list(FORMATS)},
                "payload_type": {"type": "integer"},
            },
        },
    }


def door(config: Any) -> Door:
    em = ExternalMediaDoor(config)
    return Door(
        "rtp",
        routes=(
            DoorRoute("POST", "/v1/sessions/rtp", em.reserve, "createExternalMediaSession",
                      "Reserve an RTP port for an Asterisk ARI externalMedia channel; returns its external_host",
                      request="ExternalMediaRequest",
                      replies={201: ("Session created, waiting for RTP", "ExternalMedia")}),
        ),
        schemas=_schemas,
        stop=em.stop,
        handle=em,
    )
