"""Telnyx, Plivo, Vonage and FreeSWITCH's two modules over a real socket against
the running app with the echo agent: each platform's documented sequence for a
whole call (platforms.py), its malformed input, and its parser fuzzed."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxline.control.session import SessionState
from voxline.transports import DOORS
from voxline.transports.streams.freeswitch import AudioForkDialect, AudioStreamDialect
from voxline.transports.streams.plivo import PlivoDialect
from voxline.transports.streams.telnyx import TelnyxDialect
from voxline.transports.streams.vonage import VonageDialect
from voxline.transports.streams.wire import StreamError

from ..probe import probe_signal, windowed_match
from .helpers import TOKEN, Collector, Confirmations, config, eventually, frames, inject_mark, make_app, only_session
from .helpers import send_realtime
from .platforms import PEERS, AudioFork, Peer, Vonage

__all__ = ["make_app"]

ids = [p.__name__.lower() for p in PEERS]


async def _open(app, peer_cls: type[Peer], token: str | None = TOKEN) -> tuple[Peer, Collector]:  # type: ignore[no-untyped-def]
    ws = await app.ws(peer_cls.path + peer_cls.query, token=token, protocols=peer_cls.protocols)
    return peer_cls(ws), Collector(ws)


@pytest.mark.parametrize("peer_cls", PEERS, ids=ids)
async def test_a_whole_call_as_the_platform_documents_it(make_app, peer_cls: type[Peer]) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()
    peer, got = await _open(app, peer_cls)
    assert peer.ws.protocol == (peer_cls.protocols[0] if peer_cls.protocols else None)
    await peer.start(agent="echo")
    session = await only_session(app)
    assert session.transport in DOORS and session.agent_kind == "echo"
    confirmations = Confirmations.on(session)
    events = session.events.subscribe(depth=256)
    rate = peer_cls.codec.rate
    sig = probe_signal(rate, 1.0)
    enc = peer_cls.codec.encoder()
    await send_realtime(peer.media, [enc.encode(f) for f in frames(np.tile(sig, 2), rate // 50)])
    dec = peer_cls.codec.decoder()

    def echoed() -> np.ndarray:
        chunks = peer_cls.audio_out(got.texts, got.binary)
        return np.concatenate([dec.decode(c) for c in chunks]) if chunks else np.zeros(0, np.int16)

    await eventually(lambda: len(echoed()) >= 1.6 * rate, what="the echo")
    await inject_mark(session, "reply-1")  # the end of a reply: what is gathered goes out
    await eventually(lambda: len(echoed()) >= 1.9 * rate, what="the rest of the echo")
    corr = windowed_match(echoed()[-rate:], sig, rate)
    assert corr > 0.7, f"what came back does not match what was sent ({corr:.3f})"

    await peer.dtmf("9")
    digit = None
    while (event := await events.get(timeout=5.0)) is not None:
        if event["kind"] == "dtmf":
            digit = event["data"]["digit"]
            break
    assert digit == "9"

    if peer_cls.confirms:
        await eventually(lambda: peer_cls.marks_out(got.texts) == ["reply-1"], what="our mark")
        await peer.played("reply-1")
        await eventually(lambda: confirmations.confirmed == ["reply-1"], what="the confirmation")
    assert session.pipeline is not None
    session.pipeline.interrupt("barge-in", after="agent")
    if peer_cls.clears:
        await eventually(lambda: peer_cls.cleared(got.texts), what="the clear message")
    await peer.stop()
    await eventually(lambda: session.state is SessionState.ENDED, what="the end")
    # A platform that says stop ends "transport closed: stop..."; one that only closes its socket, "peer closed".
    assert session.end_reason == "peer closed" or (session.end_reason or "").startswith("transport closed: stop")
    stats = session.endpoint.stats()  # type: ignore[union-attr]
    assert stats["faults"] == 0 and stats["digits_in"] == 1 and stats["media_in"] == 100
    assert stats["clears"] == 1


async def test_freeswitch_fork_says_disconnect_when_the_agent_ends_the_call(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()
    peer, got = await _open(app, AudioFork)
    await peer.start()
    session = await only_session(app)
    resp = await app.client.delete(f"/v1/sessions/{session.id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 204
    assert await got.closed() == 1000
    assert got.texts[-1] == {"type": "disconnect"}


@pytest.mark.parametrize("peer_cls", [p for p in PEERS if p.path.endswith(("telnyx", "plivo", "vonage"))],
                         ids=["telnyx", "plivo", "vonage"])
async def test_a_stream_that_never_starts_is_closed_1008(make_app, peer_cls: type[Peer]) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()  # start_timeout 1 s
    peer, got = await _open(app, peer_cls)
    assert await got.closed() == 1008
    assert app.sessions() == []


MALFORMED = [
    ("telnyx", "text", "{not json", 1007),
    ("telnyx", "text", '{"event": "media", "stream_id": "x", "media": {"payload": "AAAA"}}', 1008),  # before start
    ("telnyx", "text", json.dumps({"event": "start", "stream_id": "s", "start": {
        "media_format": {"encoding": "OPUS", "sample_rate": 16000, "channels": 1}}}), 1008),
    ("telnyx", "binary", "\x00\x01", 1007),
    ("plivo", "text", '{"event": "start", "start": {"streamId": ', 1007),  # truncated
    ("plivo", "text", json.dumps({"event": "start", "start": {
        "streamId": "s", "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 44100}}}), 1008),
    ("plivo", "text", '{"event": "dtmf", "streamId": "s", "dtmf": {"digit": "5"}}', 1008),  # before start
    ("vonage", "binary", "\x00" * 640, 1008),  # audio before websocket:connected
    ("vonage", "text", '{"event": "websocket:connected", "content-type": "audio/pcmu"}', 1008),
    ("vonage", "text", "[]", 1007),
]


@pytest.mark.parametrize("name, kind, bad, code", MALFORMED)
async def test_malformed_before_the_start(make_app, name: str, kind: str, bad: str, code: int) -> None:  # type: ignore[no-untyped-def]
    peer_cls = next(p for p in PEERS if p.path.endswith("/" + name))
    app = await make_app()
    peer, got = await _open(app, peer_cls)
    for _ in range(3):
        await (peer.ws.send_str(bad) if kind == "text" else peer.ws.send_bytes(bad.encode("latin-1")))
    assert await got.closed() == code
    assert app.sessions() == []


DURING = [
    ("telnyx", "text", json.dumps({"event": "media", "media": {"track": "inbound", "payload": "%%%"}}), 1007),
    ("telnyx", "text", '{"event": "media", "media": {"payl', 1007),
    ("telnyx", "text", json.dumps({"event": "mark", "mark": {"name": 3}}), 1007),
    ("plivo", "text", json.dumps({"event": "media", "media": {"payload": "A"}}), 1007),  # bad base64 padding
    ("plivo", "text", json.dumps({"event": "playedStream"}), 1007),
    ("vonage", "binary", "\x00" * 641, 1007),
    ("vonage", "text", json.dumps({"event": "websocket:notify", "payload": "x"}), 1007),
    ("vonage", "text", json.dumps({"event": "websocket:dtmf", "digit": "55"}), 1007),
    ("freeswitch", "binary", "\x00" * 3, 1007),
    ("freeswitch", "text", "{oops", 1007),  # after the metadata, text must be JSON
    ("freeswitch-stream", "binary", "", 1007),
]


@pytest.mark.parametrize("name, kind, bad, code", DURING)
async def test_malformed_during_the_call(make_app, name: str, kind: str, bad: str, code: int) -> None:  # type: ignore[no-untyped-def]
    peer_cls = next(p for p in PEERS if p.path.endswith("/" + name))
    app = await make_app()
    peer, got = await _open(app, peer_cls)
    await peer.start()
    session = await only_session(app)
    await peer.media(peer_cls.codec.encoder().encode(np.zeros(peer_cls.codec.rate // 50, np.int16)))
    for _ in range(3):
        await (peer.ws.send_str(bad) if kind == "text" else peer.ws.send_bytes(bad.encode("latin-1")))
    assert await got.closed() == code
    await eventually(lambda: session.state is SessionState.ENDED, what="the end")
    assert session.endpoint.stats()["faults"] == 3 and session.endpoint.stats()["media_in"] == 1  # type: ignore[union-attr]


async def test_tokens_in_the_start_and_bad_queries(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()
    peer, got = await _open(app, Vonage, token=None)  # the token in the NCCO headers
    await peer.start(token="wrong")
    assert await got.closed() == 1008
    peer, got = await _open(app, Vonage, token=None)
    await peer.start(token=TOKEN)
    await only_session(app)
    await peer.ws.close()
    await eventually(lambda: app.sessions() == [], what="the end")
    for path in ("/v1/streams/freeswitch?rate=44100", "/v1/streams/freeswitch-stream?rate=abc"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await app.ws(path)
        assert err.value.status == 400
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await app.ws("/v1/streams/freeswitch", token=None)  # no token: the URL must carry one
    assert err.value.status == 401
    ws = await app.ws(f"/v1/streams/freeswitch-stream?rate=8k&token={TOKEN}", token=None)
    session = await only_session(app)
    assert session.endpoint.traits.media.rate == 8000  # type: ignore[union-attr]
    await ws.close()


texts = st.one_of(
    st.text(max_size=200),
    st.builds(lambda ev, body: json.dumps({"event": ev, **body}),
              st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "playedStream",
                               "websocket:connected", "websocket:dtmf", "websocket:notify", "x"]),
              st.dictionaries(st.sampled_from(["start", "media", "dtmf", "mark", "payload", "digit", "name",
                                               "content-type", "stream_id", "streamId", "extra_headers"]),
                              st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                                           lambda c: st.lists(c, max_size=3) | st.dictionaries(
                                               st.sampled_from(["payload", "digit", "name", "media_format",
                                                                "mediaFormat", "encoding", "sample_rate",
                                                                "sampleRate", "streamId", "track"]), c, max_size=4),
                                           max_leaves=10), max_size=3)))
DIALECTS = (TelnyxDialect, PlivoDialect, VonageDialect, AudioForkDialect, AudioStreamDialect)


@settings(max_examples=400, deadline=None)
@given(texts, st.binary(max_size=100), st.booleans())
def test_the_platform_parsers_raise_only_their_own_error(text: str, data: bytes, started: bool) -> None:
    for make in DIALECTS:
        dialect = make()
        for feed in (lambda: dialect.on_text(text, started), lambda: dialect.on_binary(data, started),
                     lambda: dialect.on_text(text, started)):
            try:
                feed()
            except StreamError:
                pass
