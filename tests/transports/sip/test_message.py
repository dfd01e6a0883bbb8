from __future__ import annotations

import pytest

from voxline.transports.sip.address import parse_name_addr
from voxline.transports.sip.errors import SipParseError, SipUsageError
from voxline.transports.sip.framing import StreamFramer
from voxline.transports.sip.grammar import split_list
from voxline.transports.sip.headers import Headers, canonical_name
from voxline.transports.sip.message import Limits, Request, Response, make_response, parse_message
from voxline.transports.sip.uri import SipUri, TelUri, parse_uri
from voxline.transports.sip.via import Via, parse_via

INVITE = (
    b"INVITE sip:bob@[2001:db8::1]:5070;transport=udp SIP/2.0\r\n"
    b"v: SIP/2.0/UDP [2001:db8::2]:5060;branch=z9hG4bKabc;rport\r\n"
    b"f: \"Alice, A.\" <sip:alice@example.com>;tag=1\r\n"
    b"t: <sip:bob@example.com>\r\n"
    b"i: call-1@example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"m: <sip:alice@[2001:db8::2]:5060>, \"x,y\" <sip:b@h;a=1>\r\n"
    b"k: replaces, timer\r\n"
    b"Max-Forwards: 70\r\n"
    b"c: application/sdp\r\n"
    b"l: 4\r\n"
    b"\r\n"
    b"v=0\r\n"
)


def test_compact_forms_case_and_ipv6() -> None:
    m = parse_message(INVITE)
    assert isinstance(m, Request)
    assert isinstance(m.uri, SipUri) and (m.uri.host, m.uri.port, m.uri.transport) == ("[2001:db8::1]", 5070, "UDP")
    v = m.top_via
    assert (v.host, v.port, v.branch, v.wants_rport) == ("[2001:db8::2]", 5060, "z9hG4bKabc", True)
    assert m.from_.display_name == "Alice, A." and m.from_.tag == "1"
    assert m.call_id == "call-1@example.com"
    assert [str(c.uri) for c in m.contacts] == ["sip:alice@[2001:db8::2]:5060", "sip:b@h;a=1"]
    assert m.tokens("Supported") == ["replaces", "timer"]
    assert m.headers.get("CONTENT-LENGTH") == "4" and m.headers.get("l") == "4"
    assert [n for n, _ in m.headers][:3] == ["Via", "From", "To"]
    assert m.body == b"v=0\r"  # l: 4


def test_canonical_names() -> None:
    assert canonical_name("i") == "Call-ID" and canonical_name("cseq") == "CSeq"
    assert canonical_name("X-Custom") == "X-Custom"


def test_split_list_respects_quotes_and_brackets() -> None:
    assert split_list('"a,b" <sip:x;p=1,2>, <sip:y>,z') == ['"a,b" <sip:x;p=1,2>', "<sip:y>", "z"]
    assert split_list('"a\\",b", c') == ['"a\\",b"', "c"]


def test_uris() -> None:
    u = parse_uri("sips:alice:secret@example.com:5061;lr;maddr=1.2.3.4?subject=hi&x=%20")
    assert isinstance(u, SipUri)
    assert (u.scheme, u.user, u.password, u.port, u.is_loose_router) == ("sips", "alice", "secret", 5061, True)
    assert u.headers == [("subject", "hi"), ("x", " ")]
    assert str(u) == "sips:alice:secret@example.com:5061;lr;maddr=1.2.3.4?subject=hi&x=%20"
    t = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(t, TelUri) and t.number == "+1-201-555-0123" and str(t).startswith("tel:+1")
    for bad in ("sip:", "sip:a@b@c", "sip:host:99999", "sip:[::1", "sip:ho st", "sip:h;", "nocolon"):
        with pytest.raises(SipParseError):
            parse_uri(bad, "To")


def test_name_addr_forms() -> None:
    a = parse_name_addr("sip:a@b;tag=x", "From")
    assert a.tag == "x" and isinstance(a.uri, SipUri) and a.uri.params == []
    b = parse_name_addr("Bob  Smith <sip:a@b;lr>;tag=y", "To")
    assert b.display == "Bob  Smith" and b.tag == "y"
    assert str(b.with_tag("z")) == "Bob  Smith <sip:a@b;lr>;tag=z"
    with pytest.raises(SipParseError, match="To"):
        parse_name_addr("<sip:a@b", "To")


def test_via_parse_and_print() -> None:
    v = parse_via("SIP / 2.0 / tcp h.example.com:5060 ; branch = z9hG4bK1 ; received=2001:db8::9")
    assert (v.transport, v.port, v.branch, v.received) == ("TCP", 5060, "z9hG4bK1", "2001:db8::9")
    assert str(Via("h", 5060, "UDP", [("branch", "z9hG4bKx"), ("rport", None)])) == (
        "SIP/2.0/UDP h:5060;branch=z9hG4bKx;rport"
    )
    for bad in ("SIP/2.0/UDP", "SIP/2.0 h", "SIP/2.0/UDP h;branch", "SIP/2.0/UDP h;rport=x", "SIP/2.0/UDP h:70000"):
        with pytest.raises(SipParseError, match="Via"):
            parse_via(bad)


def test_built_message_is_byte_exact() -> None:
    r = Request(method="OPTIONS", uri=SipUri("example.com", user="bob"))
    r.headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1")
    r.headers.add("To", "<sip:bob@example.com>")
    r.set_body(b"hello", "text/plain")
    assert bytes(r) == (
        b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n"
        b"To: <sip:bob@example.com>\r\n"
        b"Content-Type: text/plain\r\n"
        b"Content-Length: 5\r\n"
        b"\r\n"
        b"hello"
    )
    assert bytes(parse_message(bytes(r))) == bytes(r)


def test_make_response_copies_and_tags() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    resp = make_response(req, 180, to_tag="abc")
    assert resp.to.tag == "abc" and resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert bytes(resp).startswith(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP [2001:db8::2]")
    assert make_response(req, 100, to_tag="abc").to.tag is None


@pytest.mark.parametrize(
    ("data", "status", "header"),
    [
        (b"INVITE sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP h\r\n\r\n", 400, "message"),
        (b"SIP/2.0 99 Low\r\n\r\n", 400, "start-line"),
        (b"SIP/2.0 200 OK\r\nl: 10\r\n\r\nabc", 400, "Content-Length"),
        (b"OPTIONS sip:a@b SIP/2.0\r\n continued\r\n\r\n", 400, "message"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: x OPTIONS\r\n\r\n", 400, "CSeq"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nMax-Forwards: 256\r\n\r\n", 400, "Max-Forwards"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: a b\r\n\r\n", 400, "Call-ID"),
    ],
)
def test_parse_errors_name_the_field(data: bytes, status: int, header: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == status and info.value.header == header


def test_limits() -> None:
    limits = Limits(max_message=200, max_headers=3, max_line=50)
    with pytest.raises(SipParseError) as info:
        parse_message(b"x" * 201, limits)
    assert info.value.status == 513
    many = b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: 1\r\n" * 4 + b"\r\n"
    with pytest.raises(SipParseError, match="headers") as info:
        parse_message(many, limits)
    assert info.value.status == 513
    with pytest.raises(SipParseError, match="longer"):
        parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"y" * 60 + b"\r\n\r\n", limits)


def test_framer_chunks_pings_and_limit() -> None:
    one = b"OPTIONS sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabc"
    framer = StreamFramer()
    data = b"\r\n\r\n" + one + one
    out: list[Request | Response] = []
    for i in range(len(data)):
        out += framer.feed(data[i : i + 1])
    assert [m.body for m in out] == [b"abc", b"abc"] and framer.pings == 1 and framer.buffered == 0
    small = StreamFramer(Limits(max_message=100))
    assert small.feed(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 10) == []
    with pytest.raises(SipParseError) as info:
        small.feed(b"X: y\r\n" * 10)
    assert info.value.status == 513
    with pytest.raises(SipUsageError):
        small.feed(b"")
    big_body = StreamFramer(Limits(max_message=100))
    with pytest.raises(SipParseError):
        big_body.feed(b"OPTIONS sip:a@b SIP/2.0\r\nl: 1000\r\n\r\n")


def test_headers_container() -> None:
    h = Headers([("v", "a"), ("To", "t"), ("Via", "b, c")])
    assert h.values("Via") == ["a", "b", "c"]
    h.prepend("Via", "z")
    assert h.get_all("via") == ["z", "a", "b, c"]
    h.replace_all("Via", ["q"])
    assert list(h) == [("Via", "q"), ("To", "t")]
    h.set("To", "u")
    h.remove("Via")
    assert list(h) == [("To", "u")] and "to" in h and "Via" not in h


def test_an_empty_supported_or_allow_is_valid_an_empty_require_is_not() -> None:
    # RFC 3261 §20.37 and §20.5: Supported and Allow may list nothing; baresip 1.0
    # sends "Supported:" bare on every INVITE, and was answered 400 for it.
    base = INVITE.replace(b"l: 4\r\n", b"Supported:\r\nAllow:\r\nl: 4\r\n")
    m = parse_message(base)
    assert m.tokens("Supported") == ["replaces", "timer"] and m.tokens("Allow") == []
    with pytest.raises(SipParseError, match="Require"):
        parse_message(INVITE.replace(b"l: 4\r\n", b"Require:\r\nl: 4\r\n"))
