"""The UAS core on a fake clock: calls answered, ended, cancelled, re-offered; the errors it owes."""

from __future__ import annotations

import pytest

from tests.transports.sip.helpers import PEER, request
from voxline.codecs import PCMA, PCMU
from voxline.transports.sip.events import Send
from voxline.transports.sip.message import Request, Response
from voxline.transports.sip.offer_answer import MediaPolicy, NoCodec
from voxline.transports.sip.sdp import SessionDescription
from voxline.transports.sip.uas import (
    CallConfirmed,
    CallEnded,
    CallState,
    DtmfReceived,
    IncomingCall,
    MediaChanged,
    SipCall,
    UasConfig,
    UasCore,
    parse_dtmf_relay,
)

OFFER = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n")


def offer(direction: str = "sendrecv", formats: str = "8 101") -> bytes:
    return OFFER.replace(b"RTP/AVP 8 101", f"RTP/AVP {formats}".encode()) + f"a={direction}\r\n".encode()


class Harness:
    def __init__(self, **config: object) -> None:
        self.core = UasCore(UasConfig("127.0.0.1", 5060, **config))  # type: ignore[arg-type]
        self.now = 0.0

    def feed(self, msg: Request | Response) -> list[object]:
        return list(self.core.receive(msg, PEER, self.now))

    def until(self, t: float) -> list[tuple[float, object]]:
        out = []
        while (d := self.core.next_timeout()) is not None and d <= t:
            self.now = d
            out += [(d, o) for o in self.core.handle_timeout(d)]
        self.now = t
        return out

    def call(self, body: bytes = OFFER, **kw: object) -> tuple[SipCall, list[object]]:
        out = self.feed(request("INVITE", body=body, **kw))  # type: ignore[arg-type]
        incoming = [o for o in out if isinstance(o, IncomingCall)]
        assert len(incoming) == 1, out
        return incoming[0].call, out

    def answered(self, **kw: object) -> tuple[SipCall, Response]:
        call, _ = self.call(**kw)
        self.core.ring(call, self.now)
        self.core.negotiate(call, "127.0.0.1", 20000)
        (ok,) = statuses(self.core.accept(call, self.now))
        return call, ok

    def confirmed(self, **kw: object) -> SipCall:
        call, ok = self.answered(**kw)
        out = self.feed(request("ACK", branch="z9hG4bK-ack", to_tag=ok.to.tag))
        assert [type(o) for o in out] == [CallConfirmed]
        return call


def statuses(out: list[object]) -> list[Response]:
    return [o.message for o in out if isinstance(o, Send) and isinstance(o.message, Response)]


def requests(out: list[object]) -> list[Request]:
    return [o.message for o in out if isinstance(o, Send) and isinstance(o.message, Request)]


def test_invite_100_180_200_with_answer_ack_then_bye() -> None:
    h = Harness()
    call, out = h.call()
    assert [r.status for r in statuses(out)] == [100]
    (ringing,) = statuses(h.core.ring(call, 0.0))
    assert ringing.status == 180 and ringing.to.tag == call.id.local_tag and ringing.contacts
    neg = h.core.negotiate(call, "127.0.0.1", 20000)
    assert (neg.codec, neg.pt, neg.dtmf_pt, neg.remote) == (PCMA, 8, 101, ("127.0.0.1", 6000))
    (ok,) = statuses(h.core.accept(call, 0.0))
    assert ok.status == 200 and ok.to.tag == call.id.local_tag and ok.content_type.mime == "application/sdp"
    sdp = SessionDescription.parse(ok.body)
    assert sdp.media[0].port == 20000 and sdp.media[0].formats == ["8", "101"]
    assert str(ok.contacts[0].uri) == "sip:voxline@127.0.0.1:5060" and "BYE" in ok.headers.get("Allow")
    # The 2xx is re-sent at T1 and 2T1 later until the ACK comes.
    assert [(t, r.status) for t, r in ((t, o.message) for t, o in h.until(1.6) if isinstance(o, Send))] == [
        (0.5, 200), (1.5, 200)]
    assert [type(o) for o in h.feed(request("ACK", branch="z9hG4bK-ack", to_tag=ok.to.tag))] == [CallConfirmed]
    assert call.state is CallState.CONFIRMED and h.until(60.0) == []  # no more re-sends, no BYE
    out = h.feed(request("BYE", branch="z9hG4bK-bye", cseq=2, to_tag=ok.to.tag))
    assert [r.status for r in statuses(out)] == [200]
    assert [(type(o), getattr(o, "reason", None)) for o in out if not isinstance(o, Send)] == [
        (CallEnded, "hangup: BYE")]
    assert h.core.calls == {}


def test_no_ack_re_sends_the_2xx_until_64_t1_then_byes() -> None:
    h = Harness()
    call, ok = h.answered()
    events = h.until(40.0)
    resent = [t for t, o in events if isinstance(o, Send) and isinstance(o.message, Response)]
    assert resent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]  # doubling to T2
    byes = [(t, o.message) for t, o in events if isinstance(o, Send) and isinstance(o.message, Request)]
    assert [(t, m.method) for t, m in byes[:1]] == [(32.0, "BYE")]
    bye = byes[0][1]
    assert bye.to.tag == "ftag" and bye.from_.tag == call.id.local_tag and bye.cseq.method == "BYE"
    assert str(bye.uri) == "sip:caller@127.0.0.1:5070"
    assert [o.reason for _, o in events if isinstance(o, CallEnded)] == ["peer gone: no ACK for the 2xx"]
    assert h.core.calls == {}


def test_reliable_transport_does_not_re_send_the_2xx() -> None:
    h = Harness()
    call, _ = h.call()
    call.reliable = True
    h.core.negotiate(call, "127.0.0.1", 20000)
    h.core.accept(call, 0.0)
    events = h.until(40.0)
    assert [t for t, o in events if isinstance(o, Send) and isinstance(o.message, Response)] == []
    assert [o.reason for _, o in events if isinstance(o, CallEnded)] == ["peer gone: no ACK for the 2xx"]


def test_cancel_before_the_answer_487s_the_invite() -> None:
    h = Harness()
    call, _ = h.call()
    h.core.ring(call, 0.0)
    out = h.feed(request("CANCEL"))
    assert [(r.status, r.cseq.method) for r in statuses(out)] == [(200, "CANCEL"), (487, "INVITE")]
    assert [o.reason for o in out if isinstance(o, CallEnded)] == ["hangup: CANCEL"] and h.core.calls == {}
    assert h.feed(request("ACK", to_tag=call.id.local_tag)) == []  # the ACK of the 487 is absorbed
    assert h.core.accept(call, 0.0) == []  # too late: nothing goes out


def test_cancel_after_the_answer_changes_nothing_unknown_cancel_is_481() -> None:
    h = Harness()
    call, _ = h.answered()
    out = h.feed(request("CANCEL"))
    assert [r.status for r in statuses(out)] == [200] and call.state is CallState.ANSWERED
    assert [r.status for r in statuses(h.feed(request("CANCEL", branch="z9hG4bK-none")))] == [481]


def test_bye_before_the_answer_ends_the_invite_with_487() -> None:
    h = Harness()
    call, _ = h.call()
    h.core.ring(call, 0.0)
    out = h.feed(request("BYE", branch="z9hG4bK-b", cseq=2, to_tag=call.id.local_tag))
    assert [(r.status, r.cseq.method) for r in statuses(out)] == [(200, "BYE"), (487, "INVITE")]


def test_options_in_and_out_of_a_dialog() -> None:
    h = Harness()
    (ok,) = statuses(h.feed(request("OPTIONS")))
    assert ok.status == 200 and "INVITE" in ok.headers.get("Allow") and "application/sdp" in ok.headers.get("Accept")


@pytest.mark.parametrize(("msg", "status", "header"), [
    (request("BYE", to_tag="nosuch"), 481, None),
    (request("INFO", to_tag="nosuch"), 481, None),
    (request("UPDATE", to_tag="nosuch"), 481, None),
    (request("SUBSCRIBE"), 405, "Allow"),
    (request("REGISTER"), 405, "Allow"),
    (request("FOO"), 501, None),
    (request("INVITE", extra=(("Require", "100rel"),)), 420, "Unsupported"),
    (request("INVITE", body=b"hello", content_type="text/plain"), 415, "Accept"),
    (request("INVITE", body=b"v=0\r\nnonsense\r\n"), 400, None),
    (request("INVITE", extra=(("Contact", "<sip:other@127.0.0.1>"),)), 400, None),
    (request("OPTIONS", cseq_method="INVITE"), 400, None),
    (request("OPTIONS", uri="mailto:agent@example.com"), 416, None),
])
def test_the_errors_a_uas_owes(msg: Request, status: int, header: str | None) -> None:
    h = Harness()
    out = h.feed(msg)
    final = [r for r in statuses(out) if r.status >= 200]
    assert [r.status for r in final] == [status]
    if header is not None:
        assert final[0].headers.get(header)
    assert not any(isinstance(o, IncomingCall) for o in out) and h.core.calls == {}


def test_400_names_the_header() -> None:
    h = Harness()
    msg = request("OPTIONS")
    msg.headers.set("Max-Forwards", "lots")
    (resp,) = statuses(h.feed(msg))
    assert resp.status == 400 and "Max-Forwards" in resp.reason


def test_reject_486_and_503_with_retry_after() -> None:
    h = Harness()
    call, _ = h.call()
    (busy,) = statuses(h.core.reject(call, 486, 0.0))
    assert busy.status == 486 and busy.to.tag == call.id.local_tag
    call2, _ = h.call(branch="z9hG4bK-2", call_id="call-2")
    out = h.core.reject(call2, 503, 0.0, retry_after=5)
    assert statuses(out)[0].headers.get("Retry-After") == "5"
    assert [o.reason for o in out if isinstance(o, CallEnded)] == ["rejected with 503"] and h.core.calls == {}


def test_no_codec_that_fits_is_488() -> None:
    h = Harness(media=MediaPolicy(codecs=(PCMU,)))
    call, _ = h.call()
    with pytest.raises(NoCodec):
        h.core.negotiate(call, "127.0.0.1", 20000)
    assert statuses(h.core.reject(call, 488, 0.0))[0].status == 488


def test_re_invite_hold_and_resume() -> None:
    h = Harness()
    call = h.confirmed()
    tag = call.id.local_tag
    out = h.feed(request("INVITE", branch="z9hG4bK-hold", cseq=2, to_tag=tag, body=offer("sendonly")))
    ok = [r for r in statuses(out) if r.status == 200][0]
    changed = [o for o in out if isinstance(o, MediaChanged)]
    assert changed and changed[0].negotiated.on_hold and changed[0].negotiated.direction == "recvonly"
    sdp = SessionDescription.parse(ok.body)
    assert sdp.media[0].has("recvonly") and sdp.origin.version == 2 and sdp.media[0].port == 20000
    assert h.feed(request("ACK", branch="z9hG4bK-a2", cseq=2, to_tag=tag)) == []
    out = h.feed(request("INVITE", branch="z9hG4bK-resume", cseq=3, to_tag=tag, body=offer("sendrecv")))
    changed = [o for o in out if isinstance(o, MediaChanged)]
    assert not changed[0].negotiated.on_hold and call.negotiated.direction == "sendrecv"


def test_re_invite_that_changes_codec_is_488_and_the_call_goes_on() -> None:
    h = Harness()
    call = h.confirmed()
    out = h.feed(request("INVITE", branch="z9hG4bK-x", cseq=2, to_tag=call.id.local_tag, body=offer(formats="0")))
    assert [r.status for r in statuses(out) if r.status >= 200] == [488]
    assert call.state is CallState.CONFIRMED and call.codec is PCMA


def test_update_with_an_offer_is_answered_in_its_200() -> None:
    h = Harness()
    call = h.confirmed()
    out = h.feed(request("UPDATE", branch="z9hG4bK-u", cseq=2, to_tag=call.id.local_tag, body=offer("inactive")))
    (ok,) = statuses(out)
    assert ok.status == 200 and SessionDescription.parse(ok.body).media[0].has("inactive")
    assert [o.negotiated.direction for o in out if isinstance(o, MediaChanged)] == ["inactive"]
    assert h.until(40.0) == []  # an UPDATE's 200 is not re-sent: no ACK is due


def test_glare_491_while_an_invite_exchange_is_unfinished_and_500_while_ringing() -> None:
    h = Harness()
    call = h.confirmed()
    tag = call.id.local_tag
    h.feed(request("INVITE", branch="z9hG4bK-r1", cseq=2, to_tag=tag, body=offer("sendonly")))
    out = h.feed(request("INVITE", branch="z9hG4bK-r2", cseq=3, to_tag=tag, body=offer()))
    assert [r.status for r in statuses(out) if r.status >= 200] == [491]
    out = h.feed(request("UPDATE", branch="z9hG4bK-r3", cseq=4, to_tag=tag, body=offer()))
    assert [r.status for r in statuses(out)] == [491]
    ringing, _ = h.call(branch="z9hG4bK-new", call_id="call-2")
    h.core.ring(ringing, h.now)
    out = h.feed(request("UPDATE", branch="z9hG4bK-u2", call_id="call-2", cseq=2, to_tag=ringing.id.local_tag,
                         body=offer()))
    (resp,) = statuses(out)
    assert resp.status == 500 and resp.headers.get("Retry-After")


def test_cseq_out_of_order_is_500() -> None:
    h = Harness()
    call = h.confirmed()
    h.feed(request("INFO", branch="z9hG4bK-i5", cseq=5, to_tag=call.id.local_tag))
    (resp,) = statuses(h.feed(request("INFO", branch="z9hG4bK-i4", cseq=4, to_tag=call.id.local_tag)))
    assert resp.status == 500


def test_info_dtmf_relay() -> None:
    h = Harness()
    call = h.confirmed()
    tag = call.id.local_tag
    out = h.feed(request("INFO", branch="z9hG4bK-d1", cseq=2, to_tag=tag, body=b"Signal=1\r\nDuration=160\r\n",
                         content_type="application/dtmf-relay"))
    assert [r.status for r in statuses(out)] == [200]
    assert [(o.digit, o.duration) for o in out if isinstance(o, DtmfReceived)] == [("1", 0.16)]
    bad = h.feed(request("INFO", branch="z9hG4bK-d2", cseq=3, to_tag=tag, body=b"Signal=X\r\n",
                         content_type="application/dtmf-relay"))
    assert [r.status for r in statuses(bad)] == [400] and not any(isinstance(o, DtmfReceived) for o in bad)
    other = h.feed(request("INFO", branch="z9hG4bK-d3", cseq=4, to_tag=tag, body=b"v=0\r\n"))
    assert [r.status for r in statuses(other)] == [415]
    assert [r.status for r in statuses(h.feed(request("INFO", branch="z9hG4bK-d4", cseq=5, to_tag=tag)))] == [200]


def test_parse_dtmf_relay() -> None:
    assert parse_dtmf_relay(b"Signal= #\nDuration= 250") == ("#", 0.25)
    assert parse_dtmf_relay(b"Signal=a") == ("A", 0.1)
    for body in (b"", b"Signal=12", b"Signal=1\nDuration=-3", b"Signal=1\nDuration=999999"):
        with pytest.raises(ValueError):
            parse_dtmf_relay(body)


def test_delayed_offer_we_offer_in_the_2xx_the_ack_answers() -> None:
    h = Harness(media=MediaPolicy(codecs=(PCMA, PCMU)))
    call, ok = h.answered(body=b"")
    sdp = SessionDescription.parse(ok.body)
    assert sdp.media[0].formats == ["8", "101"]  # the first codec of the policy, and telephone-event
    answer = OFFER.replace(b"RTP/AVP 8 101", b"RTP/AVP 8 101").replace(b"6000", b"6100")
    ack = request("ACK", branch="z9hG4bK-ack", to_tag=ok.to.tag, body=answer)
    assert [type(o) for o in h.feed(ack)] == [CallConfirmed]
    assert call.negotiated.remote == ("127.0.0.1", 6100) and call.codec is PCMA


def test_hang_up_sends_bye_in_the_dialog_with_the_route_set() -> None:
    h = Harness()
    call = h.confirmed(extra=(("Record-Route", "<sip:127.0.0.9:5099;lr>"),))
    out = h.core.hang_up(call, h.now, "agent ended")
    (bye,) = requests(out)
    sends = [o for o in out if isinstance(o, Send)]
    assert sends[0].dest == ("127.0.0.9", 5099)  # the first route: a loose router
    assert bye.headers.get_all("Route") == ["<sip:127.0.0.9:5099;lr>"] and str(bye.uri) == "sip:caller@127.0.0.1:5070"
    assert bye.cseq.number == 1 and bye.call_id == call.id.call_id and bye.top_via.branch.startswith("z9hG4bK")
    assert [o.reason for o in out if isinstance(o, CallEnded)] == ["agent ended"]
    assert h.core.hang_up(call, h.now) == []


def test_hang_up_before_the_answer_is_480() -> None:
    h = Harness()
    call, _ = h.call()
    out = h.core.hang_up(call, 0.0)
    assert [r.status for r in statuses(out)] == [480] and isinstance(out[-1], CallEnded)


def test_a_transport_error_on_the_2xx_ends_the_call() -> None:
    h = Harness()
    call, _ = h.call()
    h.core.negotiate(call, "127.0.0.1", 20000)
    (send,) = [o for o in h.core.accept(call, 0.0) if isinstance(o, Send)]
    out = h.core.transport_error(send, 0.1)
    assert [o.reason for o in out if isinstance(o, CallEnded)] == ["transport error"] and h.core.calls == {}


def test_calls_are_bounded() -> None:
    h = Harness(max_calls=1)
    h.call()
    out = h.feed(request("INVITE", branch="z9hG4bK-2", call_id="call-2", body=OFFER))
    assert [r.status for r in statuses(out)] == [100, 503] and len(h.core.calls) == 1


def test_stray_ack_is_counted_and_dropped() -> None:
    h = Harness()
    assert h.feed(request("ACK", to_tag="nobody")) == [] and h.core.counts["stray ACK"] == 1
