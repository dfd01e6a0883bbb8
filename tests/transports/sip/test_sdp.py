"""SDP (RFC 4566) parsing and offer/answer (RFC 3264): descriptions and negotiation tables."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxline.codecs import G722, OPUS, PCMA, PCMU
from voxline.transports.sip.offer_answer import MediaPolicy, NoCodec, accept_answer, answer, make_offer
from voxline.transports.sip.sdp import Connection, Origin, SdpError, SessionDescription

LOCAL = Connection.of("127.0.0.1")
ORIGIN = Origin("voxline", "1", 1, LOCAL)

# What sipp's uac_pcap scenario offers (PCMA and telephone-event).
SIPP_OFFER = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-11,16\r\n"
)


def sdp(media: str, *, conn: str = "IN IP4 127.0.0.1", extra: str = "") -> SessionDescription:
    text = f"v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc={conn}\nt=0 0\n{extra}{media}"
    return SessionDescription.parse(text.encode())


def test_parse_and_round_trip_sipp_offer() -> None:
    sd = SessionDescription.parse(SIPP_OFFER)
    assert sd.origin.session_id == "53655765" and sd.origin.version == 2353687637
    assert sd.connection == Connection("127.0.0.1", "IP4")
    (m,) = sd.media
    assert (m.media, m.port, m.proto, m.formats) == ("audio", 6000, "RTP/AVP", ["8", "101"])
    assert m.rtpmap() == {8: ("PCMA", 8000, 1), 101: ("telephone-event", 8000, 1)}
    assert m.fmtp() == {101: "0-11,16"}
    assert bytes(sd) == SIPP_OFFER


def test_lf_line_ends_ipv6_and_kept_lines() -> None:
    sd = sdp("m=audio 7000 RTP/AVP 0\nb=AS:64\na=sendonly\n", conn="IN IP6 ::1", extra="i=info\nb=CT:128\n")
    assert sd.connection == Connection("::1", "IP6") and sd.media[0].has("sendonly")
    again = SessionDescription.parse(bytes(sd))
    assert again.other == sd.other and again.media[0].other == [("b", "AS:64")]


@pytest.mark.parametrize(("text", "field"), [
    (b"o=- 1 1 IN IP4 1.2.3.4\r\n", "v"),
    (b"v=0\r\ns=-\r\n", "o"),
    (b"v=0\r\no=- 1 x IN IP4 1.2.3.4\r\n", "o"),  # sess-version is a number
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IPX 1.2.3.4\r\n", "c"),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 224.2.1.1/127\r\n", "c"),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n", "m"),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 7000 RTP/AVP\r\n", "m"),
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 7000 RTP/AVP 0\r\n", "c"),  # no address anywhere
    (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nnonsense\r\n", "sdp"),
    (b"v=0\r\n" + b"a=x\r\n" * 600, "sdp"),
    (b"\xff=0\r\n", "sdp"),
])
def test_malformed_descriptions_name_the_line(text: bytes, field: str) -> None:
    with pytest.raises(SdpError) as info:
        SessionDescription.parse(text)
    assert info.value.field == field


def test_bad_rtpmap_is_an_sdp_error() -> None:
    with pytest.raises(SdpError, match="rtpmap"):
        sdp("m=audio 7000 RTP/AVP 96\na=rtpmap:96 opus\n").media[0].rtpmap()


# -- negotiation table ----------------------------------------------------------------------------
# (offered m= line and attributes, policy, expected codec, pt, dtmf pt, ptime, our direction)
TABLE = [
    ("m=audio 6000 RTP/AVP 8 101\na=rtpmap:101 telephone-event/8000\n", MediaPolicy(), PCMA, 8, 101, 20,
     "sendrecv"),
    ("m=audio 6000 RTP/AVP 8 0\n", MediaPolicy(), PCMU, 0, None, 20, "sendrecv"),  # ours: PCMU first
    ("m=audio 6000 RTP/AVP 8 0\n", MediaPolicy(prefer="offer"), PCMA, 8, None, 20, "sendrecv"),
    ("m=audio 6000 RTP/AVP 9 0\n", MediaPolicy(codecs=(G722, PCMU)), G722, 9, None, 20, "sendrecv"),
    ("m=audio 6000 RTP/AVP 96 0 97 98\na=rtpmap:96 opus/48000/2\na=rtpmap:97 telephone-event/48000\n"
     "a=rtpmap:98 telephone-event/8000\n", MediaPolicy(codecs=(OPUS, PCMU)), OPUS, 96, 97, 20, "sendrecv"),
    ("m=audio 6000 RTP/AVP 0 98\na=rtpmap:98 telephone-event/8000\na=ptime:30\n", MediaPolicy(), PCMU, 0, 98, 30,
     "sendrecv"),
    ("m=audio 6000 RTP/AVP 0\na=ptime:25\na=maxptime:40\n", MediaPolicy(), PCMU, 0, None, 20, "sendrecv"),
    ("m=audio 6000 RTP/AVP 0\na=sendonly\n", MediaPolicy(), PCMU, 0, None, 20, "recvonly"),
    ("m=audio 6000 RTP/AVP 0\na=recvonly\n", MediaPolicy(), PCMU, 0, None, 20, "sendonly"),
    ("m=audio 6000 RTP/AVP 0\na=inactive\n", MediaPolicy(), PCMU, 0, None, 20, "inactive"),
    ("m=audio 6000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\n", MediaPolicy(dtmf=False), PCMU, 0, None, 20,
     "sendrecv"),
    ("m=audio 6000 RTP/AVP 9 101\na=rtpmap:101 telephone-event/16000\n", MediaPolicy(codecs=(G722,)), G722, 9,
     None, 20, "sendrecv"),  # telephone-event must share the codec's RTP clock (8000 for G.722)
]


@pytest.mark.parametrize(("media", "policy", "codec", "pt", "dtmf_pt", "ptime", "direction"), TABLE)
def test_negotiation_table(media: str, policy: MediaPolicy, codec: object, pt: int, dtmf_pt: int | None,
                           ptime: int, direction: str) -> None:
    desc, got = answer(sdp(media), LOCAL, 20000, policy, origin=ORIGIN)
    assert (got.codec, got.pt, got.dtmf_pt, got.ptime, got.direction) == (codec, pt, dtmf_pt, ptime, direction)
    assert got.remote == ("127.0.0.1", 6000) and got.remote_rtcp == ("127.0.0.1", 6001)
    (m,) = desc.media
    assert m.port == 20000 and m.formats[0] == str(pt) and m.has(direction)
    assert m.formats == [str(pt)] + ([str(dtmf_pt)] if dtmf_pt is not None else [])
    reparsed = SessionDescription.parse(bytes(desc))  # the answer is a valid description
    assert reparsed.media[0].rtpmap()[pt][0].lower() == codec.name.lower()  # type: ignore[attr-defined]


def test_no_common_codec_is_488_material() -> None:
    with pytest.raises(NoCodec, match="no common codec .*GSM/8000"):
        answer(sdp("m=audio 6000 RTP/AVP 3\na=rtpmap:3 GSM/8000\n"), LOCAL, 20000, origin=ORIGIN)
    with pytest.raises(NoCodec):
        answer(sdp("m=video 6000 RTP/AVP 96\na=rtpmap:96 VP8/90000\n"), LOCAL, 20000, origin=ORIGIN)
    with pytest.raises(NoCodec):
        answer(sdp("m=audio 6000 RTP/SAVP 0\n"), LOCAL, 20000, origin=ORIGIN)  # SRTP: not ours


def test_every_m_line_answered_in_order_others_rejected_with_port_0() -> None:
    offer = sdp("m=video 5000 RTP/AVP 96\na=rtpmap:96 VP8/90000\nm=audio 6000 RTP/AVP 0\nm=audio 6002 RTP/AVP 8\n")
    desc, got = answer(offer, LOCAL, 20000, origin=ORIGIN)
    assert [(m.media, m.port) for m in desc.media] == [("video", 0), ("audio", 20000), ("audio", 0)]
    assert got.index == 1 and got.remote == ("127.0.0.1", 6000)


def test_rtcp_mux_and_rtcp_attribute() -> None:
    _, mux = answer(sdp("m=audio 6000 RTP/AVP 0\na=rtcp-mux\n"), LOCAL, 20000, origin=ORIGIN)
    assert mux.rtcp_mux and mux.remote_rtcp == ("127.0.0.1", 6000)
    desc, rtcp = answer(sdp("m=audio 6000 RTP/AVP 0\na=rtcp:7001 IN IP4 127.0.0.2\n"), LOCAL, 20000, origin=ORIGIN)
    assert not rtcp.rtcp_mux and rtcp.remote_rtcp == ("127.0.0.2", 7001) and not desc.media[0].has("rtcp-mux")


def test_hold_resume_and_ipv6() -> None:
    _, held = answer(sdp("m=audio 6000 RTP/AVP 0\n", conn="IN IP4 0.0.0.0"), LOCAL, 20000, origin=ORIGIN)
    assert held.remote is None and held.on_hold and held.direction == "recvonly"  # RFC 2543 hold
    _, v6 = answer(sdp("m=audio 6000 RTP/AVP 0\n", conn="IN IP6 ::1"), Connection.of("::1"), 20000, origin=ORIGIN)
    assert v6.remote == ("::1", 6000) and not v6.on_hold
    _, ours = answer(sdp("m=audio 6000 RTP/AVP 0\n"), LOCAL, 20000, origin=ORIGIN, direction="sendonly")
    assert ours.direction == "sendonly"  # we hold the peer


def test_reoffer_keeps_the_calls_codec() -> None:
    _, got = answer(sdp("m=audio 6000 RTP/AVP 0 8\n"), LOCAL, 20000, origin=ORIGIN, keep=PCMA)
    assert got.codec is PCMA
    with pytest.raises(NoCodec):
        answer(sdp("m=audio 6000 RTP/AVP 0\n"), LOCAL, 20000, origin=ORIGIN, keep=PCMA)


def test_host_name_in_c_line_is_refused() -> None:
    with pytest.raises(SdpError, match="host"):
        answer(sdp("m=audio 6000 RTP/AVP 0\n", conn="IN IP4 pbx.example.com"), LOCAL, 20000, origin=ORIGIN)


def test_offer_then_answer_round_trip() -> None:
    policy = MediaPolicy(codecs=(OPUS, G722, PCMU))
    offer = make_offer(LOCAL, 30000, policy, origin=ORIGIN)
    (m,) = offer.media
    assert m.formats == ["111", "9", "0", "101", "102"]
    assert m.rtpmap()[101] == ("telephone-event", 48000, 1) and m.rtpmap()[102] == ("telephone-event", 8000, 1)
    # The far end prefers G.722; its answer settles our side.
    theirs, settled = answer(SessionDescription.parse(bytes(offer)), Connection.of("127.0.0.5"), 40000,
                             MediaPolicy(codecs=(G722, PCMU)), origin=ORIGIN)
    assert settled.codec is G722 and settled.dtmf_pt == 102
    ours = accept_answer(offer, SessionDescription.parse(bytes(theirs)), policy)
    assert (ours.codec, ours.pt, ours.dtmf_pt, ours.remote) == (G722, 9, 102, ("127.0.0.5", 40000))
    with pytest.raises(NoCodec):
        accept_answer(offer, sdp("m=audio 0 RTP/AVP 0\n"), policy)


# -- fuzzing: only the parser's own errors escape ---------------------------------------------------

_LINE = st.sampled_from([
    "v=0", "o=- 1 1 IN IP4 127.0.0.1", "o=- 1 1 IN IP6 ::1", "s=-", "c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0",
    "c=IN IP6 ::1", "t=0 0", "m=audio 6000 RTP/AVP 0 8 101", "m=audio 0 RTP/AVP 0", "m=video 5000 RTP/AVP 96",
    "a=rtpmap:101 telephone-event/8000", "a=rtpmap:96 opus/48000/2", "a=rtpmap:0 PCMU/8000", "a=ptime:30",
    "a=maxptime:20", "a=sendonly", "a=inactive", "a=rtcp-mux", "a=rtcp:6001", "a=fmtp:101 0-15", "b=AS:64",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_LINE, st.text(max_size=30)), max_size=20), st.binary(max_size=40))
def test_fuzzed_descriptions_raise_only_sdp_errors(lines: list[str], junk: bytes) -> None:
    data = "\r\n".join(lines).encode("utf-8", "surrogatepass") + junk
    try:
        sd = SessionDescription.parse(data)
        answer(sd, LOCAL, 20000, origin=ORIGIN)
    except (SdpError, NoCodec):
        pass
