"""Twilio Media Streams over a real socket against the running app with the echo
agent, replaying the message sequence Twilio documents
(https://www.twilio.com/docs/voice/media-streams/websocket-messages): connected,
start, media, dtmf, mark, stop; and what voxline sends back (media, mark, clear).
Then signatures, tokens in the start, refusals, malformed input and the parser
fuzzed."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import aiohttp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxline.codecs import PCMU
from voxline.control.session import SessionState
from voxline.transports import DOORS
from voxline.transports.streams.twilio import TwilioDialect, signature
from voxline.transports.streams.wire import StreamError

from ..probe import probe_signal, windowed_match
from .helpers import TOKEN, Collector, Confirmations, config, eventually, frames, inject_mark, make_app, only_session
from .helpers import send_realtime

__all__ = ["make_app"]

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA2f1e0ab0ab8c8e1f1d7b8f1b5b7f2c3d"
ACCOUNT = "AC00000000000000000000000000000000"
PATH = "/v1/streams/twilio"


class Twilio:
    """The Twilio side of a stream: its documented messages, numbered as Twilio numbers them."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0
        self.chunk = 0

    async def send(self, event: str, **body: Any) -> None:
        msg: dict[str, Any] = {"event": event}
        if event == "connected":
            msg.update(protocol="Call", version="1.0.0")
        else:
            self.seq += 1
            msg.update(sequenceNumber=str(self.seq), streamSid=SID)
        msg.update(body)
        await self.ws.send_str(json.dumps(msg))

    async def start(self, **params: str) -> None:
        await self.send("connected")
        await self.send("start", start={
            "streamSid": SID, "accountSid": ACCOUNT, "callSid": CALL, "tracks": ["inbound"],
            "customParameters": params,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}})

    async def media(self, payload: bytes) -> None:
        self.chunk += 1
        await self.send("media", media={"track": "inbound", "chunk": str(self.chunk),
                                        "timestamp": str(20 * (self.chunk - 1)),
                                        "payload": base64.b64encode(payload).decode()})


async def test_a_whole_twilio_call_as_twilio_documents_it(make_app) -> None:  # type: ignore[no-untyped-def]
    assert "twilio" in DOORS
    app = await make_app()
    ws = await app.ws(PATH)
    got = Collector(ws)
    twilio = Twilio(ws)
    await twilio.start(agent="echo")
    session = await only_session(app)
    assert session.transport == "twilio"
    confirmations = Confirmations.on(session)
    events = session.events.subscribe(depth=256)
    sig = probe_signal(8000, 1.0)
    enc = PCMU.encoder()
    await send_realtime(twilio.media, [enc.encode(f) for f in frames(np.tile(sig, 2), 160)])
    await eventually(lambda: len(got.of("event", "media")) >= 90, what="the echo")
    media = got.of("event", "media")
    assert all(m["streamSid"] == SID and set(m) == {"event", "streamSid", "media"} for m in media)
    dec = PCMU.decoder()
    back = np.concatenate([dec.decode(base64.b64decode(m["media"]["payload"])) for m in media])
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in media)  # 20 ms of µ-law
    corr = windowed_match(back[-8000:], sig, 8000)
    assert corr > 0.7, f"what came back does not match what was sent ({corr:.3f})"

    await twilio.send("dtmf", dtmf={"track": "inbound_track", "digit": "1"})
    digits = []
    while (event := await events.get(timeout=5.0)) is not None:
        if event["kind"] == "dtmf":
            digits.append(event["data"]["digit"])
            break
    assert digits == ["1"]

    await inject_mark(session, "reply-1")
    await eventually(lambda: bool(got.of("event", "mark")), what="our mark")
    assert got.of("event", "mark") == [{"event": "mark", "streamSid": SID, "mark": {"name": "reply-1"}}]
    await twilio.send("mark", mark={"name": "reply-1"})
    await eventually(lambda: confirmations.confirmed == ["reply-1"], what="the confirmation")

    assert session.pipeline is not None
    session.pipeline.interrupt("barge-in", after="agent")
    await eventually(lambda: bool(got.of("event", "clear")), what="clear")
    assert got.of("event", "clear") == [{"event": "clear", "streamSid": SID}]
    # Only media, mark and clear ever go to Twilio (anything else is its error 31924).
    assert {t["event"] for t in got.texts} == {"media", "mark", "clear"} and not got.binary

    await twilio.send("stop", stop={"accountSid": ACCOUNT, "callSid": CALL})
    assert await got.closed() == 1000
    await eventually(lambda: session.state is SessionState.ENDED, what="the end")
    assert session.end_reason == "hangup: twilio stop"
    stats = session.endpoint.stats()  # type: ignore[union-attr]
    assert stats["faults"] == 0 and stats["ignored"] == 1 and stats["media_in"] == 100  # "connected"


async def test_a_mark_pending_at_a_clear_is_never_taken_as_played(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()
    ws = await app.ws(PATH)
    got = Collector(ws)
    twilio = Twilio(ws)
    await twilio.start()
    session = await only_session(app)
    confirmations = Confirmations.on(session)
    await inject_mark(session, "a")
    await inject_mark(session, "b")
    await eventually(lambda: len(got.of("event", "mark")) == 2, what="our marks")
    await twilio.send("mark", mark={"name": "b"})  # in order: b played means a played
    await eventually(lambda: confirmations.confirmed == ["a", "b"], what="both confirmed")
    await inject_mark(session, "c")
    await eventually(lambda: len(got.of("event", "mark")) == 3, what="mark c")
    assert session.pipeline is not None
    session.pipeline.interrupt("barge-in", after="agent")
    await eventually(lambda: bool(got.of("event", "clear")), what="clear")
    await twilio.send("mark", mark={"name": "c"})  # a late echo of a mark that was pending at the clear
    await twilio.send("mark", mark={"name": "never-sent"})
    await eventually(lambda: session.endpoint.stats()["marks_unknown"] == 1, what="the unknown mark")  # type: ignore[union-attr]
    assert confirmations.confirmed == ["a", "b"]
    await ws.close()


async def test_a_stream_that_never_starts_is_closed_1008(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()  # start_timeout = 1 s
    ws = await app.ws(PATH)
    got = Collector(ws)
    await Twilio(ws).send("connected")
    assert await got.closed() == 1008
    assert app.sessions() == []


def _start(**fmt: Any) -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID,
                       "start": {"streamSid": SID, "callSid": CALL, "tracks": ["inbound"], "customParameters": {},
                                 "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1,
                                                 **fmt}}})


@pytest.mark.parametrize("bad, code", [
    ('{"event": "media", "streamSid": "%s", "media": {"payload": "AAAA"}}' % SID, 1008),  # before start
    (_start(sampleRate=16000), 1008),
    (_start(encoding="audio/x-alaw"), 1008),
    ("{not json", 1007),
    ('{"event": "start", "start": {"streamSid": ', 1007),  # truncated
    ('["start"]', 1007),
    ('{"event": "start", "start": "MZ"}', 1007),
])
async def test_malformed_before_the_start(make_app, bad: str, code: int) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()
    ws = await app.ws(PATH)
    got = Collector(ws)
    await Twilio(ws).send("connected")
    for _ in range(3):
        await ws.send_str(bad)
    assert await got.closed() == code
    assert app.sessions() == []


@pytest.mark.parametrize("bad, code", [
    ('{"event": "media", "streamSid": "%s", "media": {"track": "inbound", "payload": "not base64!"}}' % SID, 1007),
    ('{"event": "media", "streamSid": "%s", "media": {"payload": 12}}' % SID, 1007),
    ('{"event": "media", "streamSid": "%s", "media": {"payl' % SID, 1007),  # truncated
    ('{"event": "media", "streamSid": "MZother", "media": {"payload": "AAAA"}}', 1008),
    ('{"event": "dtmf", "streamSid": "%s", "dtmf": {"digit": "12"}}' % SID, 1007),
    ('{"event": "mark", "streamSid": "%s", "mark": {}}' % SID, 1007),
    (_start(), 1008),  # a second start
    ("binary", 1007),
])
async def test_malformed_during_the_call(make_app, bad: str, code: int) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()
    ws = await app.ws(PATH)
    got = Collector(ws)
    twilio = Twilio(ws)
    await twilio.start()
    session = await only_session(app)
    await twilio.media(b"\xff" * 160)
    for _ in range(3):
        await (ws.send_bytes(b"\x00" * 160) if bad == "binary" else ws.send_str(bad))
    assert await got.closed() == code
    await eventually(lambda: session.state is SessionState.ENDED, what="the end")
    assert session.endpoint.stats()["faults"] == 3 and session.endpoint.stats()["media_in"] == 1  # type: ignore[union-attr]


async def test_an_oversized_message_closes_1009(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(config(max_message=8192))
    ws = await app.ws(PATH)
    got = Collector(ws)
    twilio = Twilio(ws)
    await twilio.start()
    session = await only_session(app)
    await twilio.media(b"\xff" * 8000)  # 1 s of µ-law in one message: over 8 KiB as base64
    assert await got.closed() == 1009
    await eventually(lambda: session.state is SessionState.ENDED, what="the end")


def _signed(token: str, url: str) -> dict[str, str]:
    return {"X-Twilio-Signature": signature(token, url)}


async def test_the_twilio_signature_is_checked_when_an_auth_token_is_configured(make_app) -> None:  # type: ignore[no-untyped-def]
    cfg = config(twilio_auth_token="twilio-secret")
    app = await make_app(cfg)
    url = f"ws://{app.client.host}:{app.client.port}{PATH}"
    for headers in ({}, _signed("other-secret", url), _signed("twilio-secret", url + "x")):
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await app.ws(PATH, token=None, headers=headers)
        assert err.value.status == 401
    assert app.sessions() == []
    ws = await app.ws(PATH, token=None, headers=_signed("twilio-secret", url))  # no API token needed
    await Twilio(ws).start()
    session = await only_session(app)
    assert session.tenant == "default"
    await ws.close()


async def test_behind_a_proxy_the_signed_url_is_the_public_one(make_app) -> None:  # type: ignore[no-untyped-def]
    cfg = config(twilio_auth_token="twilio-secret", public_url="wss://voice.example.com")
    app = await make_app(cfg)
    ws = await app.ws(PATH, token=None, headers=_signed("twilio-secret", "wss://voice.example.com" + PATH))
    await Twilio(ws).start()
    await only_session(app)
    await ws.close()


async def test_without_a_signature_the_token_may_come_in_the_start(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()
    ws = await app.ws(PATH, token=None)  # Twilio sends no header; the upgrade waits for the start
    got = Collector(ws)
    await Twilio(ws).start(token="wrong")
    assert await got.closed() == 1008
    assert app.sessions() == []
    ws = await app.ws(PATH, token=None)
    await Twilio(ws).start(token=TOKEN, agent="echo")
    session = await only_session(app)
    assert session.agent_kind == "echo"
    await ws.close()


async def test_admission_refusal_closes_1013(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(dataclasses.replace(config(), max_sessions=1))
    first = await app.ws(PATH)
    await Twilio(first).start()
    await only_session(app)
    second = await app.ws(PATH)
    await Twilio(second).start()
    msg = await second.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE and second.close_code == 1013 and "capacity" in msg.extra
    await first.close()


async def test_an_unknown_agent_closes_1008(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()
    ws = await app.ws(PATH)
    got = Collector(ws)
    await Twilio(ws).start(agent="nobody")
    assert await got.closed() == 1008
    assert app.sessions() == []


def _started() -> TwilioDialect:
    d = TwilioDialect()
    d.on_text(_start(), False)
    return d


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.text(max_size=300),
    st.builds(lambda ev, body: json.dumps({"event": ev, "streamSid": SID, **body}),
              st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "x"]),
              st.dictionaries(st.sampled_from(["start", "media", "dtmf", "mark", "stop"]),
                              st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                                           lambda c: st.lists(c, max_size=3) | st.dictionaries(
                                               st.sampled_from(["payload", "digit", "name", "track", "streamSid",
                                                                "mediaFormat", "customParameters"]), c, max_size=4),
                                           max_leaves=10), max_size=2))))
def test_the_twilio_parser_raises_only_its_own_error(text: str) -> None:
    for dialect, started in ((TwilioDialect(), False), (_started(), True)):
        try:
            dialect.on_text(text, started)
        except StreamError:
            pass
