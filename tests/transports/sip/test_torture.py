"""RFC 4475: each of the 49 torture messages handled as the RFC says.

``EXPECTED`` is the table: for each tag, what the parser does with the datagram
(accept, or reject naming a header) and, for requests, what ``validate_request``
answers under a policy like the RFC's example element (every method, no
extensions, SDP / multipart / text bodies, digest challenges).
"""

from __future__ import annotations

import pytest

from voxline.transports.sip.errors import SipParseError
from voxline.transports.sip.framing import StreamFramer
from voxline.transports.sip.message import Request, Response, parse_message
from voxline.transports.sip.uri import AbsoluteUri, SipUri
from voxline.transports.sip.validate import KNOWN_METHODS, UasPolicy, validate_request

from .conftest import TORTURE_DIR, torture

RFC_ELEMENT = UasPolicy(
    methods=KNOWN_METHODS,
    supported=frozenset(),
    content_types=frozenset({"application/sdp", "multipart/mixed", "text/plain"}),
    challenge='Digest realm="example.com", nonce="abc", algorithm=MD5',
)

# tag -> (parse outcome, header the parse error names | None, validate status | None)
# parse outcome: "ok" parsed, "reject" SipParseError; validate status None = processed.
EXPECTED: dict[str, tuple[str, str | None, int | None]] = {
    # §3.1.1 valid messages
    "wsinv": ("ok", None, None),
    "intmeth": ("ok", None, 501),  # valid syntax; an unknown method is 501 (§8.2.1)
    "esc01": ("ok", None, None),
    "escnull": ("ok", None, None),
    "esc02": ("ok", None, 501),  # RE%47IST%45R is not REGISTER: an unknown method
    "lwsdisp": ("ok", None, None),
    "longreq": ("ok", None, None),
    "dblreq": ("ok", None, None),
    "semiuri": ("ok", None, None),
    "transports": ("ok", None, None),
    "mpart01": ("ok", None, None),
    "unreason": ("ok", None, None),
    "noreason": ("ok", None, None),
    # §3.1.2 invalid messages
    "badinv01": ("reject", "Via", 400),
    "clerr": ("reject", "Content-Length", None),
    "ncl": ("reject", "Content-Length", None),
    "scalar02": ("reject", "CSeq", 400),
    "scalarlg": ("reject", "CSeq", None),
    "quotbal": ("reject", "To", 400),
    "ltgtruri": ("reject", "Request-URI", None),
    "lwsruri": ("reject", "start-line", None),
    "lwsstart": ("reject", "start-line", None),
    "trws": ("reject", "start-line", None),
    "escruri": ("reject", "Request-URI", None),
    "baddate": ("reject", "Date", 400),
    "regbadct": ("reject", "Contact", 400),
    "badaspec": ("reject", "To", 400),
    "baddn": ("reject", "From", 400),
    "badvers": ("ok", None, 505),
    "mismatch01": ("ok", None, 400),
    "mismatch02": ("ok", None, 501),
    "bigcode": ("reject", "start-line", None),
    # §3.2 transaction layer
    "badbranch": ("ok", None, None),  # falls back to RFC 2543 matching
    # §3.3 application layer
    "insuf": ("ok", None, 400),
    "unkscm": ("ok", None, 416),
    "novelsc": ("ok", None, 416),
    "unksm2": ("ok", None, 400),
    "bext01": ("ok", None, 420),
    "invut": ("ok", None, 415),
    "regaut01": ("ok", None, 401),
    "multi01": ("ok", None, 400),
    "mcl01": ("reject", "Content-Length", None),
    "bcast": ("ok", None, None),
    "zeromf": ("ok", None, None),
    "cparam01": ("ok", None, None),
    "cparam02": ("ok", None, None),
    "regescrt": ("ok", None, None),
    "sdp01": ("ok", None, 406),
    # §3.4 RFC 2543 compatibility
    "inv2543": ("ok", None, None),
}


def test_table_covers_the_corpus() -> None:
    tags = {p.stem for p in TORTURE_DIR.glob("*.dat")}
    assert len(tags) == 49
    assert tags == set(EXPECTED)


@pytest.mark.parametrize("tag", sorted(EXPECTED))
def test_parse_outcome(tag: str) -> None:
    outcome, header, status = EXPECTED[tag]
    data = torture(tag)
    if outcome == "ok":
        msg = parse_message(data)
        again = parse_message(bytes(msg))
        assert type(again) is type(msg)
        assert list(again.headers) == list(msg.headers)
        assert again.body == msg.body
        return
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.header == header
    assert info.value.status == 400
    assert header is not None and header in str(info.value)


@pytest.mark.parametrize("tag", sorted(t for t, e in EXPECTED.items() if e[2] is not None or e[0] == "ok"))
def test_validate_outcome(tag: str) -> None:
    _, header, status = EXPECTED[tag]
    msg = parse_message(torture(tag), check=False)
    if isinstance(msg, Response):
        assert status is None
        return
    resp = validate_request(msg, RFC_ELEMENT, to_tag="uas1")
    if status is None:
        assert resp is None, resp and resp.reason
        return
    assert resp is not None
    assert resp.status == status
    if status == 400 and header is not None:
        assert header in resp.reason
    # The response can be routed back: Via, Call-ID and CSeq copied from the request.
    assert resp.headers.get_all("Via") == msg.headers.get_all("Via")
    assert resp.headers.get("Call-ID") == msg.headers.get("Call-ID")


def _req(tag: str) -> Request:
    msg = parse_message(torture(tag))
    assert isinstance(msg, Request)
    return msg


def test_wsinv_whitespace_and_folding() -> None:
    m = _req("wsinv")
    assert m.uri.has_param("unknownparam") if isinstance(m.uri, SipUri) else False
    assert m.to.tag == "1918181833n"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.from_.tag == "98asjd8"
    assert m.max_forwards == 68
    assert (m.cseq.number, m.cseq.method) == (9, "INVITE")
    vias = m.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    route = m.routes[0].uri
    assert isinstance(route, SipUri) and route.is_loose_router
    assert route.param("unknownwith") == "value" and route.has_param("unknown-no-value")
    (contact,) = m.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == [("newparam", "newvalue"), ("secondparam", None), ("q", "0.33")]
    assert len(m.body) == 150


def test_intmeth_unusual_characters() -> None:
    m = _req("intmeth")
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.cseq.method == m.method
    assert isinstance(m.uri, SipUri)
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.from_.param("fromParam''~+*_!.-%") == '"работающий"'
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert m.max_forwards == 255


def test_esc01_escaped_uris() -> None:
    m = _req("esc01")
    assert isinstance(m.uri, SipUri) and m.uri.user == "sips:user@example.com" and m.uri.host == "example.net"
    to = m.to.uri
    assert isinstance(to, SipUri) and to.user == "user"  # sip:%75se%72@ is sip:user@
    fr = m.from_.uri
    assert isinstance(fr, SipUri) and fr.user == "I have spaces"
    c = m.contacts[0].uri
    assert isinstance(c, SipUri) and c.user == "caller"
    assert c.params == [("lr", None), ("name", "value%41")]
    assert str(c) == "sip:caller@host5.example.net;lr;name=value%2541"


def test_escnull_and_esc02() -> None:
    m = _req("escnull")
    assert isinstance(m.to.uri, SipUri) and m.to.uri.user == "null-\x00-null"
    assert [c.uri.user for c in m.contacts if isinstance(c.uri, SipUri)] == ["\x00", "\x00\x00"]
    m = _req("esc02")
    assert m.method == "RE%47IST%45R" and m.cseq.method == "RE%47IST%45R"
    assert len(m.contacts) == 2  # C%6Fntact is another header, not Contact
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert m.top_via.branch == "z9hG4bK209%fzsnel234"
    assert m.to.display_name == "%Z%45"


def test_lwsdisp_longreq_semiuri_transports() -> None:
    assert _req("lwsdisp").from_.display == "caller"
    m = _req("longreq")
    assert len(m.vias) == 34
    assert m.to.display_name is not None and len(m.to.display_name) == 103
    assert m.from_.tag is not None and len(m.from_.tag) == 155
    assert len(m.body) == 150
    m = _req("semiuri")
    assert isinstance(m.uri, SipUri)
    assert (m.uri.user, m.uri.host, m.uri.params) == ("user;par=u@example.net", "example.com", [])
    assert len(m.headers.values("Accept")) == 6
    m = _req("transports")
    assert [v.transport for v in m.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_dblreq_one_datagram_one_message_and_stream_two() -> None:
    data = torture("dblreq")
    m = _req("dblreq")
    assert m.method == "REGISTER" and m.body == b""
    framer = StreamFramer()
    msgs = framer.feed(data)
    assert [x.method for x in msgs if isinstance(x, Request)] == ["REGISTER", "INVITE"]
    assert len(msgs[1].body) == 150
    # The INVITE's body is 3 bytes longer than its Content-Length: on a stream
    # the leftover cannot be framed, and the connection is done.
    with pytest.raises(SipParseError):
        framer.feed(b"")


def test_mpart01_multipart_body_kept_as_bytes() -> None:
    m = _req("mpart01")
    ct = m.content_type
    assert ct is not None and ct.mime == "multipart/mixed" and ct.param("boundary") == "7a9cbec02ceef655"
    assert len(m.body) == 553
    assert m.body.endswith(b"--7a9cbec02ceef655--\r\n")
    assert m.top_via.wants_rport and m.top_via.rport is None


def test_reason_phrases() -> None:
    m = parse_message(torture("unreason"))
    assert isinstance(m, Response) and m.status == 200
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    m = parse_message(torture("noreason"))
    assert isinstance(m, Response) and (m.status, m.reason) == (100, "")


def test_application_layer_details() -> None:
    r = validate_request(_req("bext01"), RFC_ELEMENT)
    assert r is not None and r.headers.get("Unsupported") == "nothingSupportsThis, nothingSupportsThisEither"
    r = validate_request(_req("invut"), RFC_ELEMENT)
    assert r is not None and r.headers.get("Accept") is not None
    r = validate_request(_req("insuf"), RFC_ELEMENT)
    assert r is not None and "To, From, Call-ID" in r.reason
    r = validate_request(_req("regaut01"), RFC_ELEMENT)
    assert r is not None and (r.headers.get("WWW-Authenticate") or "").startswith("Digest ")
    assert validate_request(_req("regaut01"), UasPolicy(methods=KNOWN_METHODS)) is None
    for tag in ("unkscm", "novelsc"):
        assert isinstance(_req(tag).uri, AbsoluteUri)
    m = _req("unksm2")
    assert [type(x.uri).__name__ for x in (m.to, m.from_, m.contacts[0])] == ["AbsoluteUri"] * 3
    assert _req("zeromf").max_forwards == 0
    # cparam01: the parameter belongs to the Contact; cparam02: to the URI.
    c1 = _req("cparam01").contacts[0]
    assert c1.params == [("unknownparam", None)] and isinstance(c1.uri, SipUri) and c1.uri.params == []
    c2 = _req("cparam02").contacts[0]
    assert c2.params == [] and isinstance(c2.uri, SipUri) and c2.uri.params == [("unknownparam", None)]
    c3 = _req("regescrt").contacts[0].uri
    assert isinstance(c3, SipUri) and c3.headers == [("Route", "<sip:sip.example.com>")]
    m = _req("inv2543")
    assert m.top_via.branch is None and m.max_forwards is None and m.headers.get("Content-Length") is None
    assert m.body.startswith(b"v=0") and m.body.endswith(b"RTP/AVP 0\r\n")  # to the datagram's end
    b = parse_message(torture("bcast"))
    assert isinstance(b, Response) and len(b.vias) == 2


def test_multi01_and_scalar02_name_the_header() -> None:
    r = validate_request(_req("multi01"), RFC_ELEMENT)
    assert r is not None and r.status == 400
    m = parse_message(torture("scalar02"), check=False)
    assert isinstance(m, Request)
    r = validate_request(m, RFC_ELEMENT)
    assert r is not None and r.status == 400 and "CSeq" in r.reason
