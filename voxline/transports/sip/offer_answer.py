"""SDP offer/answer for one audio stream (RFC 3264), over the codec registry.

The answerer's rules, as RFC 3264 §6 has them: the answer has one m= line per
offered one, in order; the first audio RTP/AVP(F) stream with a codec both
sides have is accepted, every other stream is rejected with port 0. The answer
lists the one chosen codec under the offerer's payload type (so both
directions use one number, §6.1) and telephone-event at that codec's clock
rate if offered (RFC 4733 §2.1), and mirrors the direction (sendonly ->
recvonly, §6.1). ptime is taken from the offer when it is a frame size the
codec has, and rtcp-mux is answered when offered (RFC 5761 §5.1.1).

Preference: ``MediaPolicy.codecs`` is the server's order; ``prefer="offer"``
takes the offerer's order among those instead. No common codec is ``NoCodec``
(a UAS answers 488). A re-offer in a call keeps the call's codec (``keep``):
the pipeline was built for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxline.codecs import G722, OPUS, PCMA, PCMU, Codec, CodecError, lookup

from .sdp import Connection, MediaDescription, Origin, SdpError, SessionDescription, is_ip

__all__ = ["MediaPolicy", "Negotiated", "NoCodec", "answer", "accept_answer", "make_offer", "DIRECTIONS"]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
_PROTOS = ("RTP/AVP", "RTP/AVPF")
_PTIMES = (10, 20, 30, 40, 60)
_OPUS_PTIMES = (10, 20, 40, 60)
TELEPHONE_EVENT = "telephone-event"


class NoCodec(Exception):
    """Nothing in the offer can be answered (488 Not Acceptable Here); says why."""


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    codecs: tuple[Codec, ...] = (PCMU, PCMA, G722, OPUS)  # the server's preference, best first
    prefer: str = "ours"  # or "offer": the offerer's order among ours
    ptime: int = 20  # ms, when the offer names none we can use
    dtmf: bool = True  # answer (and offer) telephone-event
    offer_dtmf_pt: int = 101
    offer_opus_pt: int = 111

    def __post_init__(self) -> None:
        if self.prefer not in ("ours", "offer"):
            raise ValueError(f"prefer must be 'ours' or 'offer', not {self.prefer!r}")
        if not self.codecs:
            raise ValueError("a media policy needs at least one codec")


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What the call's RTP uses after offer/answer."""

    codec: Codec
    pt: int
    dtmf_pt: int | None
    remote: tuple[str, int] | None  # where to send RTP; None when the peer takes none (port 0, hold)
    remote_rtcp: tuple[str, int] | None
    ptime: int
    direction: str  # ours: what this side does
    rtcp_mux: bool
    index: int  # the m= line

    @property
    def on_hold(self) -> bool:
        """The peer wants no audio from us (it put us on hold)."""
        return self.direction in ("recvonly", "inactive")


def _direction(sd: SessionDescription, m: MediaDescription) -> str:
    for d in DIRECTIONS:
        if m.has(d):
            return d
    for n, _ in sd.attributes:
        if n in DIRECTIONS:
            return n
    return "sendrecv"


def _offered(m: MediaDescription) -> list[tuple[int, Codec | None, tuple[str, int, int]]]:
    """Each offered format as (pt, codec or None for what we lack, (name, rate, channels))."""
    maps = m.rtpmap()
    out: list[tuple[int, Codec | None, tuple[str, int, int]]] = []
    for fmt in m.formats:
        if not fmt.isdigit() or int(fmt) > 127:
            continue
        pt = int(fmt)
        spec = maps.get(pt)
        if spec is None:
            static = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1)}.get(pt)
            if static is None:
                continue
            spec = static
        try:
            codec: Codec | None = lookup(*spec)
        except CodecError:
            codec = None
        out.append((pt, codec, spec))
    return out


def _choose(offered: list[tuple[int, Codec | None, tuple[str, int, int]]], policy: MediaPolicy,
            keep: Codec | None) -> tuple[int, Codec] | None:
    ours = [c for c in (keep,) if c is not None] if keep is not None else list(policy.codecs)
    have = [(pt, c) for pt, c, _ in offered if c is not None and any(_same(c, o) for o in ours)]
    if not have:
        return None
    if policy.prefer == "offer" and keep is None:
        return have[0]
    return min(have, key=lambda pc: next(i for i, o in enumerate(ours) if _same(pc[1], o)))


def _same(a: Codec, b: Codec) -> bool:
    return (a.name.lower(), a.clock_rate, a.channels) == (b.name.lower(), b.clock_rate, b.channels)


def _ptime(m: MediaDescription, codec: Codec, policy: MediaPolicy) -> int:
    allowed = _OPUS_PTIMES if codec.name.lower() == "opus" else _PTIMES
    text = m.attribute("ptime")
    maxp = m.attribute("maxptime")
    limit = int(maxp) if maxp and maxp.isdigit() else 1000
    if text and text.isdigit() and int(text) in allowed and int(text) <= limit:
        return int(text)
    if policy.ptime <= limit:
        return policy.ptime
    fits = [p for p in allowed if p <= limit]
    return fits[-1] if fits else policy.ptime


def _remote(sd: SessionDescription, m: MediaDescription, rtcp_mux: bool) -> tuple[
        tuple[str, int] | None, tuple[str, int] | None]:
    conn = sd.connection_for(m)
    if conn is None or m.port == 0 or conn.is_hold:
        return None, None
    if not is_ip(conn.address):
        raise SdpError(f"c= names a host, not an address: {conn.address!r}", "c")
    rtcp = m.attribute("rtcp")
    if rtcp_mux:
        rtcp_addr = (conn.address, m.port)
    elif rtcp and rtcp.split()[0].isdigit():
        bits = rtcp.split()
        rtcp_addr = (bits[3] if len(bits) >= 4 else conn.address, int(bits[0]))
    else:
        rtcp_addr = (conn.address, m.port + 1)
    return (conn.address, m.port), rtcp_addr


def _dtmf_pt(offered: list[tuple[int, Codec | None, tuple[str, int, int]]], rate: int) -> int | None:
    for pt, _, (name, clock, _) in offered:
        if name.lower() == TELEPHONE_EVENT and clock == rate:
            return pt
    return None


def answer(offer: SessionDescription, local: Connection, port: int, policy: MediaPolicy = MediaPolicy(), *,
           origin: Origin, keep: Codec | None = None, direction: str = "sendrecv"
           ) -> tuple[SessionDescription, Negotiated]:
    """Our answer to ``offer`` and what it settles. ``direction`` is what we want
    (``sendrecv``, or ``sendonly`` to hold the peer); it is narrowed by the offer."""
    chosen: Negotiated | None = None
    lines: list[MediaDescription] = []
    reasons: list[str] = []
    for i, m in enumerate(offer.media):
        if chosen is not None or m.media != "audio" or m.proto not in _PROTOS or m.port == 0:
            reasons.append(f"m={m.media} {m.proto} not taken")
            lines.append(MediaDescription(m.media, 0, m.proto, m.formats[:1]))
            continue
        offered = _offered(m)
        pick = _choose(offered, policy, keep)
        if pick is None:
            names = ", ".join(f"{n}/{r}" for _, _, (n, r, _) in offered) or "none"
            reasons.append(f"no common codec (offered {names})")
            lines.append(MediaDescription(m.media, 0, m.proto, m.formats[:1]))
            continue
        pt, codec = pick
        mux = m.has("rtcp-mux")
        remote, remote_rtcp = _remote(offer, m, mux)
        theirs = _direction(offer, m)
        conn = offer.connection_for(m)
        if conn is not None and conn.is_hold and theirs == "sendrecv":
            theirs = "sendonly"  # RFC 2543 hold: c=0.0.0.0 means "do not send to me"
        ours = _narrow(direction, _MIRROR[theirs])
        dtmf_pt = _dtmf_pt(offered, codec.clock_rate) if policy.dtmf else None
        ptime = _ptime(m, codec, policy)
        out = MediaDescription("audio", port, m.proto, [str(pt)] + ([str(dtmf_pt)] if dtmf_pt is not None else []))
        out.attributes.append(("rtpmap", f"{pt} {codec.rtpmap}"))
        fmtp = m.fmtp().get(pt)
        if codec.fmtp:
            out.attributes.append(("fmtp", f"{pt} {codec.fmtp_line}"))
        elif fmtp:
            out.attributes.append(("fmtp", f"{pt} {fmtp}"))
        if dtmf_pt is not None:
            out.attributes.append(("rtpmap", f"{dtmf_pt} {TELEPHONE_EVENT}/{codec.clock_rate}"))
            out.attributes.append(("fmtp", f"{dtmf_pt} 0-16"))
        out.attributes.append(("ptime", str(ptime)))
        if mux:
            out.attributes.append(("rtcp-mux", None))
        out.attributes.append((ours, None))
        lines.append(out)
        chosen = Negotiated(codec, pt, dtmf_pt, remote, remote_rtcp, ptime, ours, mux, i)
    if chosen is None:
        raise NoCodec("; ".join(reasons) or "the offer has no media")
    return SessionDescription(origin, connection=local, media=lines), chosen


def _narrow(want: str, allowed: str) -> str:
    """The direction both allow: the intersection of send and receive."""
    send = want in ("sendrecv", "sendonly") and allowed in ("sendrecv", "sendonly")
    recv = want in ("sendrecv", "recvonly") and allowed in ("sendrecv", "recvonly")
    return {(True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly"}.get(
        (send, recv), "inactive")


def make_offer(local: Connection, port: int, policy: MediaPolicy = MediaPolicy(), *, origin: Origin,
               direction: str = "sendrecv") -> SessionDescription:
    """An offer of every codec of the policy, in its order, with telephone-event."""
    m = MediaDescription("audio", port, "RTP/AVP", [])
    rates: list[int] = []
    for codec in policy.codecs:
        pt = codec.static_pt if codec.static_pt is not None else policy.offer_opus_pt
        m.formats.append(str(pt))
        m.attributes.append(("rtpmap", f"{pt} {codec.rtpmap}"))
        if codec.fmtp:
            m.attributes.append(("fmtp", f"{pt} {codec.fmtp_line}"))
        if codec.clock_rate not in rates:
            rates.append(codec.clock_rate)
    if policy.dtmf:
        for n, rate in enumerate(rates):
            pt = policy.offer_dtmf_pt + n
            m.formats.append(str(pt))
            m.attributes.append(("rtpmap", f"{pt} {TELEPHONE_EVENT}/{rate}"))
            m.attributes.append(("fmtp", f"{pt} 0-16"))
    m.attributes += [("ptime", str(policy.ptime)), (direction, None)]
    return SessionDescription(origin, connection=local, media=[m])


def accept_answer(offer: SessionDescription, reply: SessionDescription, policy: MediaPolicy = MediaPolicy()
                  ) -> Negotiated:
    """What an answer to our ``offer`` settles (``NoCodec`` if it accepts nothing we offered)."""
    if len(reply.media) != len(offer.media):
        raise NoCodec(f"the answer has {len(reply.media)} m= lines for {len(offer.media)} offered")
    for i, m in enumerate(reply.media):
        if m.port == 0 or m.media != "audio":
            continue
        offered_pts = set(offer.media[i].formats)
        for pt, codec, _ in _offered(m):
            if codec is not None and str(pt) in offered_pts and any(_same(codec, c) for c in policy.codecs):
                mux = m.has("rtcp-mux") and offer.media[i].has("rtcp-mux")
                remote, remote_rtcp = _remote(reply, m, mux)
                ours = _MIRROR[_direction(reply, m)]
                return Negotiated(codec, pt, _dtmf_pt(_offered(m), codec.clock_rate), remote, remote_rtcp,
                                  _ptime(m, codec, policy), ours, mux, i)
    raise NoCodec("the answer accepts no codec we offered")
