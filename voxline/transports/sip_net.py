"""SIP on the network: a UDP socket and a TCP listener, moving bytes only.

Each datagram is one message (RFC 3261 §18.3); a TCP stream is framed by
Content-Length (``framing.StreamFramer``). Both hand parsed messages, with
where they came from, to one ``on_message`` callback, and ``send`` writes a
message back: over UDP to an address, over TCP on a connection to that address
(a response goes back on the connection its request came on, §18.2.2; a
request goes on a connection open to its destination, or one that ``connect``
opens, §18.1.1).

Bounds: a datagram larger than ``Limits.max_message`` is dropped unread, a TCP
stream past it is closed (the framer's limit), at most ``max_connections`` TCP
connections are open, and each source address gets ``rate`` messages a second
(burst ``burst``) before its messages are dropped and counted. Sources outside
the allow-list are dropped before parsing. Malformed messages are counted and
dropped; nothing a peer sends can raise out of here.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
from collections.abc import Callable, Sequence
from typing import Any

from .sip.errors import SipError
from .sip.framing import StreamFramer
from .sip.message import DEFAULT_LIMITS, Limits, Request, Response, parse_message

__all__ = ["SipNetwork", "AllowList"]

log = logging.getLogger(__name__)

Address = tuple[str, int]
OnMessage = Callable[[Request | Response, Address, bool], None]
MAX_CONNECTIONS = 512
CONNECT_TIMEOUT = 3.0  # s for a TCP connection we open
MAX_SOURCES = 4096  # rate-limit buckets kept (least recently used go first)


class AllowList:
    """Peer networks allowed to reach us; empty allows every address."""

    def __init__(self, networks: Sequence[str] = ()) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def __bool__(self) -> bool:
        return bool(self.networks)

    def allows(self, host: str) -> bool:
        if not self.networks:
            return True
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return any(addr in n for n in self.networks if n.version == addr.version)


class _Buckets:
    """A token bucket per source host, bounded in how many sources it remembers."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._b: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def take(self, host: str) -> bool:
        now = self.clock()
        tokens, at = self._b.pop(host, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        ok = tokens >= 1.0
        self._b[host] = (tokens - 1.0 if ok else tokens, now)
        if len(self._b) > MAX_SOURCES:
            self._b.popitem(last=False)
        return ok


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, net: SipNetwork) -> None:
        self.net = net

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.net._datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("x SIP UDP error: %s", exc)


class _Tcp(asyncio.Protocol):
    def __init__(self, net: SipNetwork, outbound: bool = False) -> None:
        self.net = net
        self.outbound = outbound  # we opened it: its destination was checked by whoever asked
        self.framer = StreamFramer(net.limits)
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        if len(self.net.connections) >= MAX_CONNECTIONS or \
                not (self.outbound or self.net.allow.allows(self.peer[0])):
            self.net.counts["refused_connections"] += 1
            transport.close()
            return
        self.net.connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except SipError as exc:
            self.net.counts["malformed"] += 1
            log.debug("x SIP TCP from %s: %s; closing", self.peer, exc)
            if self.transport is not None:
                self.transport.close()
            return
        for msg in messages:
            self.net._deliver(msg, self.peer, True)

    def connection_lost(self, exc: Exception | None) -> None:
        conns = self.net.connections
        for addr in [a for a, c in conns.items() if c is self]:
            del conns[addr]


class SipNetwork:
    def __init__(self, on_message: OnMessage, *, allow: AllowList | None = None, limits: Limits = DEFAULT_LIMITS,
                 rate: float = 200.0, burst: int = 400) -> None:
        self.on_message = on_message
        self.allow = allow or AllowList()
        self.limits = limits
        self.connections: dict[Address, _Tcp] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._buckets = _Buckets(rate, burst, lambda: asyncio.get_running_loop().time())
        self.address: Address = ("", 0)

    async def start(self, host: str, port: int, *, tcp: bool = True) -> Address:
        """Bind UDP (and TCP on the same port); returns the address bound."""
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, port))
        self._udp = udp
        bound = udp.get_extra_info("sockname")
        self.address = (bound[0], bound[1])
        if tcp:
            try:
                self._tcp = await loop.create_server(lambda: _Tcp(self), host, self.address[1])
            except OSError:
                udp.close()
                raise
        return self.address

    async def stop(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
            for conn in list(self.connections.values()):
                if conn.transport is not None:
                    conn.transport.close()
            await self._tcp.wait_closed()
        if self._udp is not None:
            self._udp.close()

    async def connect(self, dest: Address, timeout: float = CONNECT_TIMEOUT) -> None:
        """A TCP connection to ``dest`` for requests we send (kept, like one a peer
        opened, until either end closes it); one already open is reused.
        OSError when it cannot be opened within ``timeout``."""
        if self.connected(dest):
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, proto = await loop.create_connection(lambda: _Tcp(self, outbound=True), dest[0], dest[1])
        except TimeoutError as exc:
            raise OSError(f"{dest[0]}:{dest[1]}: no TCP connection within {timeout:g} s") from exc
        if transport.is_closing():  # refused by the connection limit
            raise OSError(f"{dest[0]}:{dest[1]}: {MAX_CONNECTIONS} SIP TCP connections open already")
        self.counts["connected"] += 1
        if proto.peer != dest:  # a name or an IPv6 spelling: keep it under the address asked for too
            self.connections[dest] = proto

    def connected(self, dest: Address) -> bool:
        conn = self.connections.get(dest)
        return conn is not None and conn.transport is not None and not conn.transport.is_closing()

    def send(self, msg: Request | Response, dest: Address, reliable: bool) -> bool:
        """Write ``msg``; False when it cannot go (its TCP connection is gone)."""
        data = bytes(msg)
        if reliable:
            if not self.connected(dest):
                return False
            self.connections[dest].transport.write(data)  # type: ignore[union-attr]
        else:
            if self._udp is None or self._udp.is_closing():
                return False
            self._udp.sendto(data, dest)
        self.counts["sent"] += 1
        return True

    def _datagram(self, data: bytes, source: Address) -> None:
        if len(data) > self.limits.max_message:
            self.counts["oversize"] += 1
            return
        if data.strip(b"\r\n") == b"":
            self.counts["keepalive"] += 1  # RFC 5626 CRLF keep-alive
            return
        if not self.allow.allows(source[0]):
            self.counts["not_allowed"] += 1
            return
        try:
            msg = parse_message(data, self.limits, check=False)
        except SipError as exc:
            self.counts["malformed"] += 1
            log.debug("x SIP from %s: %s", source, exc)
            return
        self._deliver(msg, source, False)

    def _deliver(self, msg: Request | Response, source: Address, reliable: bool) -> None:
        if not self._buckets.take(source[0]):
            self.counts["rate_limited"] += 1
            return
        self.counts["received"] += 1
        try:
            self.on_message(msg, source, reliable)
        except Exception:  # a bug must cost one message, never the listener
            self.counts["errors"] += 1
            log.exception("x SIP message from %s failed", source)
