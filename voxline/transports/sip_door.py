"""The SIP door: calls from softphones and trunks, answered through admission.

``door(config)`` is registered as ``"sip"``. ``start(service)`` binds SIP on
``sip_host:sip_port`` (UDP and TCP) and drives a ``sip.uas.UasCore`` with what
arrives and with time; this module only carries out the core's decisions:

    INVITE -> admit (Refused: 486 at capacity, 503 + Retry-After otherwise)
           -> 180 -> an RTP port pair -> SDP answer (no codec: 488)
           -> Runtime.open on an RtpCallTransport -> 200; ACK -> media flows
    BYE, CANCEL, no ACK, RTP inactivity -> the session ends, its port is released
    the session ends from our side (API, agent) -> BYE

The Request-URI's user picks the agent when it names one (``sip:echo@host``).
Every wait is bounded (an answer that takes more than ``ANSWER_TIMEOUT`` is a
503), and a failure in one call never reaches another or the listener.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import functools

from voxline.codecs import KNOWN

from .base import BadRequest, Door, Refused, Service
from .rtp.errors import PortsExhausted
from .rtp.ports import shared_allocator
from .rtp.session import RtpParams
from .rtp_call import MediaTicker, RtpCallTransport, open_rtp
from .sip.calls import CallConfirmed, CallEnded, CallState, DtmfReceived, IncomingCall, MediaChanged, SipCall
from .sip.events import Send
from .sip.message import Request, Response
from .sip.offer_answer import MediaPolicy, Negotiated, NoCodec
from .sip.uas import CoreOutput, UasConfig, UasCore
from .sip.uri import SipUri
from .sip_net import AllowList, SipNetwork

__all__ = ["SipDoor", "door", "parse_port_range", "media_policy"]

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 10.0  # s from INVITE to 200: admission, a port, the pipeline
STOP_TIMEOUT = 2.0  # s to let BYEs go out on stop


def parse_port_range(text: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    if not sep or not first.strip().isdigit() or not last.strip().isdigit():
        raise ValueError(f"rtp_ports must be 'first-last', not {text!r}")
    return int(first), int(last)


def media_policy(names: tuple[str, ...]) -> MediaPolicy:
    """The codec preference from names (``PCMA``, ``opus`` ...); empty: the default order."""
    if not names:
        return MediaPolicy()
    by_name = {c.name.lower(): c for c in KNOWN}
    unknown = [n for n in names if n.lower() not in by_name]
    if unknown:
        raise ValueError(f"sip_codecs: unknown codec {unknown[0]!r} (known: {', '.join(c.name for c in KNOWN)})")
    return MediaPolicy(codecs=tuple(by_name[n.lower()] for n in names))


def rtp_params(n: Negotiated) -> RtpParams:
    return RtpParams(n.codec, n.pt, n.dtmf_pt, n.ptime, n.remote, n.remote_rtcp, n.rtcp_mux,
                     peer_sends=n.direction in ("sendrecv", "recvonly"))


class SipDoor:
    def __init__(self, config: Any) -> None:
        self.config = config
        first, last = parse_port_range(config.rtp_ports)
        self.ports = shared_allocator(first, last)  # shared with ARI external media
        self.media = media_policy(tuple(config.sip_codecs))
        self.allow = AllowList(tuple(config.sip_allow))
        self.net = SipNetwork(self._message, allow=self.allow)
        self.ticker = MediaTicker()
        self.service: Service | None = None
        self.core: UasCore | None = None
        self.transports: dict[SipCall, RtpCallTransport] = {}
        self.sessions: dict[SipCall, Any] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.address: tuple[str, int] = ("", 0)
        self.error: str | None = None

    @property
    def listening(self) -> bool:
        return self.core is not None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, service: Service) -> None:
        """Listen. A SIP port that cannot be bound (another process holds it) is
        logged as an error and SIP stays off, while the rest of the service runs,
        as the runtime does when its models fail to load; ``listening`` says which."""
        self.service = service
        try:
            self.address = await self.net.start(self.config.sip_host, self.config.sip_port)
        except OSError as exc:
            self.error = f"cannot listen on {self.config.sip_host}:{self.config.sip_port}: {exc}"
            log.error("SIP door: %s", self.error)
            return
        host = self._media_host()
        self.core = UasCore(UasConfig(host, self.address[1], media=self.media))
        log.info("SIP listening on %s:%d (UDP, TCP); RTP %s", *self.address, self.config.rtp_ports)

    async def stop(self) -> None:
        core = self.core
        if core is not None:
            loop = asyncio.get_running_loop()
            for call in list(core.calls.values()):
                self._apply(core.hang_up(call, loop.time(), "service stopping"))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT)
        for call, session in list(self.sessions.items()):
            await session.end("service stopping")
        if self._timer is not None:
            self._timer.cancel()
        await self.ticker.stop()
        await self.net.stop()
        self.core = None

    def _media_host(self) -> str:
        host = self.config.sip_host
        return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host

    # -- messages and time ---------------------------------------------------------

    def _message(self, msg: Request | Response, source: tuple[str, int], reliable: bool) -> None:
        if self.core is None:
            return
        now = asyncio.get_running_loop().time()
        self._apply(self.core.receive(msg, source, now, reliable=reliable))

    def _on_timer(self) -> None:
        self._timer = None
        if self.core is not None:
            self._apply(self.core.handle_timeout(asyncio.get_running_loop().time()))

    def _apply(self, outputs: list[CoreOutput]) -> None:
        """Carry out what the core decided, then re-arm its timer."""
        core = self.core
        if core is None:
            return
        pending = list(outputs)
        while pending:
            o = pending.pop(0)
            if isinstance(o, Send):
                if not self.net.send(o.message, o.dest, self._reliable(o)):
                    pending += core.transport_error(o, asyncio.get_running_loop().time())
            elif isinstance(o, IncomingCall):
                self._spawn(self._answer(o.call))
            elif isinstance(o, CallConfirmed):
                t = self.transports.get(o.call)
                if t is not None:
                    t.connect()
            elif isinstance(o, MediaChanged):
                t = self.transports.get(o.call)
                if t is not None:
                    t.update(rtp_params(o.negotiated))
            elif isinstance(o, DtmfReceived):
                t = self.transports.get(o.call)
                if t is not None:
                    t.inbound_dtmf(o.digit, o.duration)
            elif isinstance(o, CallEnded):
                log.info("SIP call %s ended: %s", o.call.id.call_id, o.reason)
                t = self.transports.get(o.call)
                if t is not None:
                    t.gone(o.reason)
        self._arm()

    def _reliable(self, send: Send) -> bool:
        tx = send.transaction
        if tx is not None:
            return tx.reliable
        return send.dest in self.net.connections

    def _arm(self) -> None:
        core = self.core
        if core is None:
            return
        when = core.next_timeout()
        if self._timer is not None:
            if when is not None and self._timer.when() == when:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- answering -------------------------------------------------------------------

    async def _answer(self, call: SipCall) -> None:
        core, service = self.core, self.service
        assert core is not None and service is not None
        loop = asyncio.get_running_loop()
        agent = self._agent_of(call.invite, service)
        try:
            session = service.admit("sip", agent, tenant="default", key=None)  # a trunk carries many callers: sip_allow and the per-source rate bound it
        except Refused as exc:
            status = 486 if exc.code == "capacity" else 503
            self._apply(core.reject(call, status, loop.time(), reason=exc.reason[:60], retry_after=exc.retry_after))
            return
        except BadRequest as exc:
            self._apply(core.reject(call, 404, loop.time(), reason=exc.message[:60]))
            return
        self.sessions[call] = session  # admitted: every path below ends it or hands it to the call
        transport: RtpCallTransport | None = None
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                self._apply(core.ring(call, loop.time()))
                transport = await self._media(call, session)
                self.transports[call] = transport
                await service.open(session, transport)
        except NoCodec as exc:
            self._apply(core.reject(call, 488, loop.time(), reason=f"Not Acceptable Here ({exc})"[:100]))
        except (Refused, PortsExhausted, TimeoutError) as exc:
            log.warning("x SIP call %s not answered: %s", call.id.call_id, exc)
            retry = exc.retry_after if isinstance(exc, Refused) else 5
            self._apply(core.reject(call, 503, loop.time(), retry_after=retry))
        except Exception:
            log.exception("x SIP call %s failed to open", call.id.call_id)
            self._apply(core.reject(call, 500, loop.time()))
        else:
            if call.state is not CallState.ENDED and _live(session):
                self._apply(core.accept(call, loop.time()))
            else:  # cancelled while the pipeline was built, or the session ended meanwhile
                self._apply(core.reject(call, 480, loop.time(), reason="Temporarily Unavailable"))
        finally:
            if call.state is CallState.ENDED or not _live(session):
                await self._drop(call, session, transport)

    async def _media(self, call: SipCall, session: Any) -> RtpCallTransport:
        core = self.core
        assert core is not None
        pair, rtp, rtcp = await open_rtp(self.ports, self._media_host())
        try:
            negotiated = core.negotiate(call, self._media_host(), pair.rtp)
        except BaseException:
            rtp.close()
            if rtcp is not None:
                rtcp.close()
            self.ports.release(pair)
            raise
        if negotiated.rtcp_mux and rtcp is not None:
            rtcp.close()
            rtcp = None
        return RtpCallTransport(rtp_params(negotiated), pair, rtp, rtcp, release=self.ports.release,
                                ticker=self.ticker, idle_timeout=self.config.rtp_timeout,
                                wait_to_hear=bool(self.allow),
                                on_close=functools.partial(self._closed, call))

    async def _drop(self, call: SipCall, session: Any, transport: RtpCallTransport | None) -> None:
        self.transports.pop(call, None)
        self.sessions.pop(call, None)
        await session.end(call.ended or "not answered")
        if transport is not None:
            await transport.close()

    def _closed(self, call: SipCall, reason: str) -> None:
        """The call's transport closed (the session ended): BYE if the call was answered.
        (Before the answer, ``_answer`` itself says how the INVITE ends.)"""
        self.transports.pop(call, None)
        self.sessions.pop(call, None)
        if self.core is not None and call.state in (CallState.ANSWERED, CallState.CONFIRMED):
            self._apply(self.core.hang_up(call, asyncio.get_running_loop().time()))

    @staticmethod
    def _agent_of(invite: Request, service: Service) -> str | None:
        uri = invite.uri
        user = uri.user if isinstance(uri, SipUri) else None
        return user if user in service.agents else None

    def stats(self) -> dict[str, Any]:
        core = self.core
        return {"listening": self.listening, "error": self.error, "calls": len(core.calls) if core else 0, "rtp_ports_in_use": self.ports.in_use,
                "net": dict(self.net.counts), "core": dict(core.counts) if core else {}}


def _live(session: Any) -> bool:
    return getattr(session, "state", None) is None or session.state.value not in ("ending", "ended")


def door(config: Any) -> Door:
    sip = SipDoor(config)
    return Door("sip", start=sip.start, stop=sip.stop, handle=sip)

