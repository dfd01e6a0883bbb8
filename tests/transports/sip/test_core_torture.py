"""The UAS core fed every RFC 4475 message, and mutations of them: nothing escapes.

Each torture datagram goes through what the SIP door does with one (frame
without header checks, then ``UasCore.receive``). The core must never raise,
must send nothing but responses, and only to the address the datagram came
from: these messages name hosts that are not ours (192.0.2.x, example.com).
An INVITE that survives validation becomes a call, which is then refused and
must leave nothing behind.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxline.transports.sip.errors import SipError
from voxline.transports.sip.events import Send
from voxline.transports.sip.message import Response, parse_message
from voxline.transports.sip.uas import IncomingCall, UasConfig, UasCore

from .conftest import TORTURE_DIR

SOURCE = ("127.0.0.1", 40404)
TAGS = sorted(p.stem for p in TORTURE_DIR.glob("*.dat"))


def feed(core: UasCore, data: bytes, now: float = 0.0) -> list[object]:
    try:
        msg = parse_message(data, check=False)
    except SipError:
        return []  # the door counts and drops what cannot even be framed
    out = list(core.receive(msg, SOURCE, now))
    for o in out:
        if isinstance(o, IncomingCall):
            out += core.reject(o.call, 503, now, retry_after=1)
    return out


def check(out: list[object]) -> None:
    for o in out:
        if isinstance(o, Send):
            assert isinstance(o.message, Response) and o.dest == SOURCE, o


def test_there_are_49_messages() -> None:
    assert len(TAGS) == 49


@pytest.mark.parametrize("tag", TAGS)
def test_each_torture_message_is_answered_only_to_its_source_and_leaves_no_call(tag: str) -> None:
    core = UasCore(UasConfig("127.0.0.1", 5060))
    data = (TORTURE_DIR / f"{tag}.dat").read_bytes()
    out = feed(core, data)
    check(out)
    check(feed(core, data, 0.5))  # a retransmission: absorbed or answered again, the same way
    events = []
    now = 0.0
    while (t := core.next_timeout()) is not None and now < 100:
        now = t
        events += core.handle_timeout(t)
    check(events)
    assert core.calls == {} and len(core.layer) == 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TAGS), st.data())
def test_mutated_torture_messages_never_raise(tag: str, data: st.DataObject) -> None:
    raw = bytearray((TORTURE_DIR / f"{tag}.dat").read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "dup"]))
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[i:i + data.draw(st.integers(1, 40))]
        else:
            raw[i:i] = raw[i:i + data.draw(st.integers(1, 40))]
    core = UasCore(UasConfig("127.0.0.1", 5060))
    check(feed(core, bytes(raw)))
