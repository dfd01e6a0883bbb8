"""RFC 4475's messages sent to a running service, in a loopback-only network namespace.

The messages name hosts that are not ours (192.0.2.x, example.com, a broadcast
address). ``torture_ns`` runs the service with its SIP door inside a namespace
whose only interface is loopback and sends each message over UDP and over TCP
(each transport to a fresh service). What must hold:

- every answer went to where the message came from, and nothing anywhere else;
- what the service answers is what RFC 4475 says an element does: a response
  is never answered; a message the parser rejects is dropped (counted) or, if
  its Via could be read, answered 400; a request the RFC calls invalid gets the
  status the table in test_torture names; a valid INVITE is admitted (here
  refused, the service has no room: 486) and a valid OPTIONS answered 200;
- a message that repeats an earlier one's transaction (the corpus reuses
  branches) may be absorbed by that transaction, as RFC 3261 §17.2.3 says;
- afterwards the service still answers SIP and HTTP.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from voxline.transports.sip.errors import SipError
from voxline.transports.sip.message import Request, Response, parse_message

from .conftest import TORTURE_DIR, torture
from .test_torture import EXPECTED

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None,
                                reason="needs unshare and ip (util-linux, iproute2)")


@cache
def run() -> dict[str, Any]:
    out = subprocess.run(["unshare", "--net", "--", sys.executable, "-m", "tests.transports.sip.torture_ns",
                          str(TORTURE_DIR)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def transaction(tag: str) -> tuple[str, str] | None:
    try:
        msg = parse_message(torture(tag), check=False)
    except SipError:
        return None
    if not isinstance(msg, Request):
        return None
    via = msg.headers.get("Via") or ""
    return via.split("branch=")[-1].split(";")[0].split(",")[0].strip(), msg.method


def absorbed(tag: str) -> bool:
    """Whether an earlier message (the service gets them in name order) opened the
    transaction this one would match."""
    key = transaction(tag)
    return key is not None and any(transaction(t) == key for t in sorted(EXPECTED) if t < tag)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_the_service_answered_only_the_sources_and_still_answers(transport: str) -> None:
    got = run()[transport]
    assert got["sent_to"] == ["127.0.0.1"]  # nothing went to a host a message merely named
    assert got["options_after"] == [200] and got["healthz"] == 200
    assert got["net"]["malformed"] >= 8 and "errors" not in got["net"]  # counted, and no handler failed


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("tag", sorted(EXPECTED))
def test_each_message_is_answered_as_rfc_4475_says(tag: str, transport: str) -> None:
    answers = run()[transport]["results"][tag]
    outcome, _, status = EXPECTED[tag]
    finals = sorted({a for a in answers if isinstance(a, int) and a >= 200})
    assert all(isinstance(a, int) or a == "closed" for a in answers), answers  # responses we can read
    if tag == "dblreq" and transport == "tcp":
        # Over a stream both messages are read (§3.1.1.11): REGISTER 405, then the INVITE
        # (RFC 2543 style, no Contact: admitted, and refused for room).
        assert answers[0] == 405 and len(finals) == 2, answers
        return
    assert len(finals) <= 1, answers  # one final answer (retransmitted, perhaps)
    try:
        msg: Request | Response | None = parse_message(torture(tag), check=False)
    except SipError:
        msg = None
    if isinstance(msg, Response):
        assert answers == [], answers  # a response is never answered
        return
    if outcome == "reject":
        # Dropped and counted, the connection closed on TCP; or 400 if its Via could be read.
        assert finals in ([], [400]) and set(answers) <= {100, 400, "closed"}, answers
        return
    if not finals and absorbed(tag):
        return  # a retransmission, to the transaction's own source
    assert msg is not None
    if msg.method == "REGISTER":
        expected = 405 if status in (None, 401) or tag == "unksm2" else status  # not a registrar (§21.4.6)
    elif status is not None:
        expected = status
    elif msg.method == "INVITE":
        expected = 486  # admitted, and refused for room (max_sessions 0)
    else:
        # OPTIONS; a method of a dialog (BYE, INFO...) outside one; one we do not do (MESSAGE).
        expected = {"OPTIONS": 200, "BYE": 481, "CANCEL": 481, "INFO": 481, "UPDATE": 481}.get(msg.method, 405)
    if tag == "wsinv":
        expected = 481  # an INVITE in a dialog (To has a tag) that does not exist
    assert finals == [expected], answers
