"""The SIP door: calls from softphones and trunks, answered through admission.

``door(config)`` is registered as ``"sip"``. ``start(service)`` binds SIP on
``sip_host:sip_port`` (UDP and TCP) and drives a ``sip.uas.UasCore`` with what
arrives and with time; this module only carries out the core's decisions:

    INVITE -> admit (Refused: 486 at capacity, 503 + Retry-After otherwise)
           -> 180 -> an RTP port pair -> SDP answer (no codec: 488)
           -> Runtime.open on an RtpCallTransport -> 200; ACK -> media flows
    BYE, CANCEL, no ACK, RTP inactivity -> the session ends, its port is released
    the session ends from our side (API, agent) -> BYE

Calls out (``POST /v1/calls``, see ``sip_out``): admitted like the rest, an RTP
port pair, an INVITE with our offer (through ``sip_outbound_proxy`` when set,
answering the trunk's digest challenges); the answer builds the pipeline and
media flows; a refusal, no answer or the session ending first ends it (CANCEL
while it rings). ``POST /v1/sessions/{id}/transfer`` REFERs the peer of any
answered SIP call elsewhere; the session ends "transferred" once the peer's new
call is answered. With ``sip_register`` set, the door registers with the trunk
and keeps the binding fresh.

The Request-URI's user picks the agent when it names one (``sip:echo@host``).
Every wait is bounded (an answer that takes more than ``ANSWER_TIMEOUT`` is a
503), and a failure in one call never reaches another or the listener.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import functools

from voxline.codecs import KNOWN

from .base import BadRequest, Conflict, Door, Refused, Service
from .rtp.errors import PortsExhausted
from .rtp.ports import shared_allocator
from .rtp.session import RtpParams
from .rtp_call import MediaTicker, RtpCallTransport, open_rtp
from .sip.address import NameAddr
from .sip.calls import CallConfirmed, CallEnded, CallState, DtmfReceived, IncomingCall, MediaChanged, SipCall
from .sip.digest import Credentials
from .sip.events import Send
from .sip.ids import transport_of
from .sip.message import Request, Response
from .sip.offer_answer import MediaPolicy, Negotiated, NoCodec
from .sip.refer import TransferUpdate
from .sip.register import Registered, Registration, RegistrationFailed, RegistrationState
from .sip.ua import UaOutput, UserAgent
from .sip.uac import CallAnswered, CallProgress, OutgoingCall, OutgoingEnded, OutgoingState, UacConfig
from .sip.uas import UasConfig, UasCore
from .sip.uri import SipUri, parse_uri
from .sip_net import AllowList, SipNetwork
from .sip_out import Dialing, Outgoing, resolve, routes, schemas

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
        self.dial_allow = AllowList(tuple(config.sip_dial_allow))
        self.net = SipNetwork(self._message, allow=self.allow)
        self.ticker = MediaTicker()
        self.service: Service | None = None
        self.core: UasCore | None = None
        self.ua: UserAgent | None = None
        self.outgoing: dict[OutgoingCall, Outgoing] = {}  # calls out not answered yet
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
        cfg = self.config
        self.core = UasCore(UasConfig(host, self.address[1], media=self.media))
        creds = Credentials(cfg.sip_trunk_user, cfg.sip_trunk_password) if cfg.sip_trunk_user else None
        self.ua = UserAgent(self.core, UacConfig(host, self.address[1], user=cfg.sip_trunk_user or "voxline",
                                                 credentials=creds, ring_timeout=cfg.sip_ring_timeout,
                                                 media=self.media))
        log.info("SIP listening on %s:%d (UDP, TCP); RTP %s", *self.address, cfg.rtp_ports)
        if cfg.sip_register:
            await self._register()

    async def _register(self) -> None:
        ua, cfg = self.ua, self.config
        assert ua is not None
        registrar = parse_uri(cfg.sip_register)
        assert isinstance(registrar, SipUri)
        try:
            dest = await resolve(cfg.sip_outbound_proxy or registrar.hostport)
        except OSError as exc:
            self.error = f"cannot register: {exc}"
            log.error("SIP door: %s", self.error)
            return
        aor = SipUri(cfg.sip_trunk_domain or registrar.host, cfg.sip_trunk_user)
        ua.registration = Registration(ua.layer, ua.uac.auth, registrar, aor, ua.uac.config.contact, dest,
                                       ua.uac.config.via, expires=cfg.sip_register_expires)
        self._apply(ua.registration.start(asyncio.get_running_loop().time()))

    async def stop(self) -> None:
        core, ua = self.core, self.ua
        if core is not None and ua is not None:
            loop = asyncio.get_running_loop()
            for out in list(self.outgoing):
                self._apply(ua.uac.cancel(out, loop.time(), "service stopping"))
            for call in list(core.calls.values()):
                self._apply(core.hang_up(call, loop.time(), "service stopping"))
            if ua.registration is not None:
                self._apply(ua.registration.stop(loop.time()))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT)
        for call, session in list(self.sessions.items()):
            await session.end("service stopping")
        for pending in list(self.outgoing.values()):
            await pending.session.end("service stopping")
        reg = ua.registration if ua is not None else None
        if reg is not None:  # let the registrar's answer to Expires: 0 come (a challenge included)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STOP_TIMEOUT
            while reg.state is RegistrationState.UNREGISTERING and loop.time() < deadline:
                await asyncio.sleep(0.02)
        if self._timer is not None:
            self._timer.cancel()
        await self.ticker.stop()
        await self.net.stop()
        self.core = self.ua = None

    def _media_host(self) -> str:
        host = self.config.sip_host
        return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host

    # -- messages and time ---------------------------------------------------------

    def _message(self, msg: Request | Response, source: tuple[str, int], reliable: bool) -> None:
        if self.ua is None:
            return
        now = asyncio.get_running_loop().time()
        self._apply(self.ua.receive(msg, source, now, reliable=reliable))

    def _on_timer(self) -> None:
        self._timer = None
        if self.ua is not None:
            self._apply(self.ua.handle_timeout(asyncio.get_running_loop().time()))

    def _apply(self, outputs: Sequence[UaOutput]) -> None:
        """Carry out what the user agent decided, then re-arm its timer."""
        ua = self.ua
        if ua is None:
            return
        pending = list(outputs)
        while pending:
            o = pending.pop(0)
            if isinstance(o, Send):
                reliable = self._reliable(o)
                if reliable and isinstance(o.message, Request) and not self.net.connected(o.dest):
                    self._spawn(self._connect_and_send(o))  # §18.1.1: a request opens its connection
                elif not self.net.send(o.message, o.dest, reliable):
                    pending += ua.transport_error(o, asyncio.get_running_loop().time())
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
                ua.transfers.forget(o.call)
                t = self.transports.get(o.call)
                if t is not None:
                    t.gone(o.reason)
            else:
                self._outbound_event(o)
        self._arm()

    def _outbound_event(self, o: UaOutput) -> None:
        if isinstance(o, CallProgress):
            pending = self.outgoing.get(o.call)
            if pending is not None:
                pending.session.events.publish("sip", state="ringing", status=o.status, reason=o.reason)
        elif isinstance(o, CallAnswered):
            pending = self.outgoing.pop(o.call, None)
            if pending is not None:
                self._spawn(self._connect(pending, o.sip_call, o.negotiated))
            elif self.core is not None:  # its session is gone: nobody to talk to
                self._apply(self.core.hang_up(o.sip_call, asyncio.get_running_loop().time(), "session ended"))
        elif isinstance(o, OutgoingEnded):
            log.info("SIP call out %s ended: %s", o.call.call_id, o.reason)
            pending = self.outgoing.pop(o.call, None)
            if pending is not None:
                pending.release()
                pending.session.events.publish("sip", state="ended", status=o.status, reason=o.reason)
                pending.session.end_soon(o.reason)
        elif isinstance(o, TransferUpdate):
            self._transfer_update(o)
        elif isinstance(o, Registered):
            self.error = None
            log.info("SIP registered with %s for %d s", self.config.sip_register, o.expires)
        elif isinstance(o, RegistrationFailed):
            log.warning("x SIP registration with %s failed: %s%s", self.config.sip_register, o.reason,
                        f"; again in {o.retry_in:.0f} s" if o.retry_in is not None else "")

    def _transfer_update(self, o: TransferUpdate) -> None:
        call = o.transfer.call
        session = self.sessions.get(call)
        if session is None:
            return
        state = ("transferred" if o.ok else "failed") if o.final else "accepted" if o.status == 202 else "progress"
        session.events.publish("transfer", state=state, status=o.status, reason=o.reason, to=o.transfer.target)
        log.info("SIP call %s transfer to %s: %s %s", call.id.call_id, o.transfer.target, state, o.reason)
        if o.final and o.ok:  # RFC 5589 §6: the transferor hangs up once the new call is up
            session.end_soon("transferred")

    async def _connect_and_send(self, send: Send) -> None:
        """A request over TCP to where no connection is open (the peer's Contact,
        not the port its own connection came from): open one, then send."""
        try:
            await self.net.connect(send.dest)
            sent = self.net.send(send.message, send.dest, True)
        except OSError as exc:
            log.info("x SIP over TCP to %s:%d: %s", *send.dest, exc)
            sent = False
        if not sent and self.ua is not None:
            self._apply(self.ua.transport_error(send, asyncio.get_running_loop().time()))

    def _reliable(self, send: Send) -> bool:
        if send.reliable is not None:
            return send.reliable
        tx = send.transaction
        if tx is not None:
            return tx.reliable
        return send.dest in self.net.connections

    def _arm(self) -> None:
        ua = self.ua
        if ua is None:
            return
        when = ua.next_timeout()
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
            session.extra["peer"] = _address(call.source)  # for the call's record
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

    # -- calling out ---------------------------------------------------------------------

    async def first_hop(self, to: SipUri) -> tuple[str, int]:
        """Where a call to ``to`` goes first (the outbound proxy, or the target
        resolved); ``BadRequest`` naming ``to`` if nowhere, or outside sip_dial_allow.
        Asked before admission: a bad target costs no rate token and no slot."""
        if self.ua is None:
            raise Conflict("sip_off", "SIP is not listening: " + (self.error or "stopped"))
        proxy = self.config.sip_outbound_proxy
        try:
            dest = await resolve(proxy or to.hostport)
        except OSError as exc:
            raise BadRequest("to", f"to: {exc}") from exc
        if not proxy and not self.dial_allow.allows(dest[0]):
            raise BadRequest("to", f"to: {dest[0]} is not in sip_dial_allow")
        if to.transport == "TCP":
            try:
                await self.net.connect(dest)
            except OSError as exc:
                raise BadRequest("to", f"to: {exc}") from exc
        return dest

    async def dial(self, session: Any, to: SipUri, from_: NameAddr | None, dest: tuple[str, int]) -> OutgoingCall:
        """Send the INVITE for ``session`` to ``dest`` (``first_hop``); the answer
        (or its failure) comes as events."""
        cfg = self.config
        proxy = cfg.sip_outbound_proxy
        trunk = bool(proxy) or (bool(cfg.sip_trunk_domain) and to.host.lower() == cfg.sip_trunk_domain.lower())
        if from_ is None and cfg.sip_trunk_user:
            from_ = NameAddr(SipUri(cfg.sip_trunk_domain or self._media_host(), cfg.sip_trunk_user))
        host = self._media_host()
        reliable = to.transport == "TCP"  # its connection is open (first_hop); if lost since, sending reopens it
        pair, rtp, rtcp = await open_rtp(self.ports, host)
        pending = Outgoing(session, pair, rtp, rtcp, self.ports)
        if _live(session) is False or self.ua is None:
            pending.release()
            raise Conflict("ended", "the session ended before the call was placed")
        loop = asyncio.get_running_loop()
        call, out = self.ua.uac.dial(to, dest, (host, pair.rtp), loop.time(), from_=from_, authenticate=trunk,
                                     reliable=reliable)
        pending.call = call
        self.outgoing[call] = pending
        session.endpoint = Dialing(self, pending)
        session.connect_by = loop.time() + cfg.sip_ring_timeout + ANSWER_TIMEOUT
        session.extra["sip_call_id"] = call.call_id
        log.info("SIP call out %s to %s via %s:%d (%s)", call.call_id, to, *dest, "TCP" if reliable else "UDP",
                 extra={"session_id": session.id})
        self._apply(out)
        return call

    def cancel_outgoing(self, pending: Outgoing) -> None:
        """The session ended while its call rang: CANCEL, and the port is free at once."""
        pending.release()
        call = pending.call
        if call is None or self.ua is None:
            return
        self.outgoing.pop(call, None)
        if call.state not in (OutgoingState.ANSWERED, OutgoingState.ENDED):
            self._apply(self.ua.uac.cancel(call, asyncio.get_running_loop().time(), "session ended"))

    async def _connect(self, pending: Outgoing, call: SipCall, negotiated: Negotiated) -> None:
        """The callee answered (and was ACKed): the pipeline on an RTP transport, media flows."""
        core, service, session = self.core, self.service, pending.session
        assert core is not None and service is not None
        loop = asyncio.get_running_loop()
        rtcp = pending.rtcp
        if negotiated.rtcp_mux and rtcp is not None:
            rtcp.close()
            rtcp = None
        pending.released = True  # the transport owns the sockets and the pair from here
        transport = RtpCallTransport(rtp_params(negotiated), pending.pair, pending.rtp, rtcp,
                                     release=self.ports.release, ticker=self.ticker,
                                     idle_timeout=self.config.rtp_timeout, wait_to_hear=bool(self.allow),
                                     on_close=functools.partial(self._closed, call))
        self.transports[call] = transport
        self.sessions[call] = session
        try:
            if not _live(session):
                raise RuntimeError("the session ended while the call was answered")
            async with asyncio.timeout(ANSWER_TIMEOUT):
                await service.open(session, transport)
        except Exception as exc:
            log.warning("x SIP call out %s answered but not opened: %s", call.id.call_id, exc)
            self._apply(core.hang_up(call, loop.time(), "open failed"))
            await self._drop(call, session, transport)
            return
        session.events.publish("sip", state="answered", status=200, reason="OK")
        transport.connect()

    def transfer(self, session: Any, to: SipUri) -> None:
        """REFER the peer of ``session``'s SIP call to ``to``."""
        ua, core = self.ua, self.core
        call = next((c for c, s in self.sessions.items() if s is session), None)
        if ua is None or core is None or call is None or call.state is not CallState.CONFIRMED:
            raise Conflict("not_active", f"session {session.id} has no answered SIP call")
        try:
            _, out = ua.transfers.start(call, to, core.next_hop(call), asyncio.get_running_loop().time(),
                                        contact=core.config.contact_for(transport_of(call.reliable)))
        except ValueError as exc:
            raise Conflict("transfer_pending", str(exc)) from exc
        session.events.publish("transfer", state="referring", status=0, reason="", to=str(to))
        self._apply(out)

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
        ua = self.ua
        reg = ua.registration if ua is not None else None
        return {"listening": self.listening, "error": self.error, "calls": len(core.calls) if core else 0,
                "calls_out": len(self.outgoing), "rtp_ports_in_use": self.ports.in_use,
                "net": dict(self.net.counts), "core": dict(core.counts) if core else {},
                "uac": dict(ua.uac.counts) if ua else {}, "transfers": dict(ua.transfers.counts) if ua else {},
                "registration": {"state": reg.state.value, "expires": reg.granted, "error": reg.last_error}
                if reg is not None else None}


def _live(session: Any) -> bool:
    return getattr(session, "state", None) is None or session.state.value not in ("ending", "ended")


def door(config: Any) -> Door:
    sip = SipDoor(config)
    return Door("sip", routes=routes(sip), schemas=schemas, start=sip.start, stop=sip.stop, handle=sip)


def _address(addr: Any) -> str:
    """``host:port`` of a signalling address (``[v6]:port``)."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
