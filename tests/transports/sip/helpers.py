"""Messages for transaction and dialog tests: built as a peer would send them."""

from __future__ import annotations

from voxline.transports.sip.message import Request, Response, make_response, parse_message

PEER = ("127.0.0.1", 5070)


def request(method: str, *, branch: str = "z9hG4bK-1", cseq: int = 1, call_id: str = "call-1@127.0.0.1",
            to_tag: str | None = None, from_tag: str = "ftag", uri: str = "sip:agent@127.0.0.1:5060",
            sent_by: str = "127.0.0.1:5070", body: bytes = b"", content_type: str | None = None,
            extra: tuple[tuple[str, str], ...] = (), cseq_method: str | None = None) -> Request:
    to = "<sip:agent@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {sent_by};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:caller@127.0.0.1>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:caller@127.0.0.1:5070>",
        *(f"{n}: {v}" for n, v in extra),
    ]
    if body:
        lines.append(f"Content-Type: {content_type or 'application/sdp'}")
    lines.append(f"Content-Length: {len(body)}")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int, *, to_tag: str | None = "ttag") -> Response:
    return make_response(req, status, to_tag=to_tag)
