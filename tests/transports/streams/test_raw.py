"""The raw stream over a real socket against the running app with the echo agent:
a whole call (audio both ways, DTMF to the agent, events to the client, a
barge-in as ``clear``, a mark confirmed after playout, stop), its refusals,
its malformed input, and its parser fuzzed."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxline.control.session import SessionState
from voxline.transports import DOORS
from voxline.transports.streams.raw import RawDialect
from voxline.transports.streams.wire import StreamError

from ..probe import probe_signal, windowed_match
from .helpers import TOKEN, Collector, Confirmations, config, eventually, frames, inject_mark, make_app, only_session
from .helpers import send_realtime

__all__ = ["make_app"]

RATE = 16000


async def test_a_whole_raw_call_with_the_echo_agent(make_app) -> None:  # type: ignore[no-untyped-def]
    assert "raw" in DOORS
    app = await make_app()
    ws = await app.ws(f"/v1/streams/raw?rate={RATE}&encoding=pcm16")
    got = Collector(ws)
    session = await only_session(app)
    assert session.transport == "raw" and session.agent_kind == "echo"
    confirmations = Confirmations.on(session)
    sig = probe_signal(RATE, 1.0)
    await send_realtime(ws.send_bytes, [f.astype("<i2").tobytes() for f in frames(np.tile(sig, 2), RATE // 50)])
    await eventually(lambda: sum(map(len, got.binary)) >= 2 * RATE * 2 * 0.9, what="the echo")
    back = np.frombuffer(b"".join(got.binary), "<i2").astype(np.int16)
    assert all(len(b) == RATE // 50 * 2 for b in got.binary)  # 20 ms frames
    corr = windowed_match(back[-RATE:], sig, RATE)
    assert corr > 0.7, f"what came back does not match what was sent ({corr:.3f})"

    await ws.send_str(orjson.dumps({"type": "dtmf", "digit": "7"}).decode())
    await eventually(lambda: any(t["event"]["kind"] == "dtmf" for t in got.of("type", "event")), what="dtmf event")
    dtmf = [t["event"] for t in got.of("type", "event") if t["event"]["kind"] == "dtmf"]
    assert dtmf[0]["data"] == {"digit": "7"} and dtmf[0]["session_id"] == session.id

    await inject_mark(session, "m1")
    await eventually(lambda: bool(got.of("type", "mark")), what="the mark")
    assert got.of("type", "mark") == [{"type": "mark", "name": "m1"}]
    assert confirmations.confirmed == []  # sent, not yet played
    await ws.send_str(orjson.dumps({"type": "mark", "name": "m1"}).decode())
    await eventually(lambda: confirmations.confirmed == ["m1"], what="the confirmation")

    assert session.pipeline is not None
    session.pipeline.interrupt("barge-in", after="agent")
    await eventually(lambda: bool(got.of("type", "clear")), what="clear")

    await ws.send_str('{"type": "stop"}')
    assert await got.closed() == 1000
    await eventually(lambda: session.state is SessionState.ENDED, what="the end")
    assert session.end_reason == "hangup: client stopped"
    stats = session.endpoint.stats()  # type: ignore[union-attr]
    assert stats["faults"] == 0 and stats["marks_confirmed"] == 1 and stats["clears"] == 1
    assert stats["digits_in"] == 1 and stats["media_in"] == 100


@pytest.mark.parametrize("encoding", ["ulaw", "alaw"])
async def test_g711_raw_streams_echo_at_8k(make_app, encoding: str) -> None:  # type: ignore[no-untyped-def]
    from voxline.codecs import PCMA, PCMU

    codec = PCMU if encoding == "ulaw" else PCMA
    app = await make_app()
    ws = await app.ws(f"/v1/streams/raw?rate=8000&encoding={encoding}")
    got = Collector(ws)
    await only_session(app)
    sig = probe_signal(8000, 1.0)
    enc = codec.encoder()
    await send_realtime(ws.send_bytes, [enc.encode(f) for f in frames(np.tile(sig, 2), 160)])
    await eventually(lambda: sum(map(len, got.binary)) >= 8000 * 2 * 0.9, what="the echo")
    dec = codec.decoder()
    back = np.concatenate([dec.decode(b) for b in got.binary])
    assert windowed_match(back[-8000:], sig, 8000) > 0.7
    await ws.close()


async def test_the_agent_ending_the_call_closes_the_stream(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()
    ws = await app.ws("/v1/streams/raw")
    got = Collector(ws)
    session = await only_session(app)
    resp = await app.client.delete(f"/v1/sessions/{session.id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 204
    assert await got.closed() == 1000
    assert session.end_reason == "deleted"


@pytest.mark.parametrize("query, status", [
    ("encoding=opus", 400), ("encoding=ulaw&rate=16000", 400), ("rate=abc", 400), ("rate=0", 400),
])
async def test_a_bad_query_is_refused_before_the_upgrade(make_app, query: str, status: int) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await app.ws(f"/v1/streams/raw?{query}")
    assert err.value.status == status
    assert app.sessions() == []


async def test_credentials_header_query_subprotocol_or_401(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()
    for token in (None, "wrong"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await app.ws("/v1/streams/raw", token=token)
        assert err.value.status == 401
    ws = await app.ws(f"/v1/streams/raw?token={TOKEN}", token=None)
    await only_session(app)
    await ws.close()
    await eventually(lambda: app.sessions() == [], what="the end")
    ws = await app.ws("/v1/streams/raw", token=None, protocols=(f"bearer.{TOKEN}",))
    await only_session(app)
    await ws.close()
    resp = await app.client.get("/v1/streams/raw")  # not an upgrade
    assert resp.status == 426


async def test_admission_refusal_closes_1013(make_app) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    app = await make_app(dataclasses.replace(config(), max_sessions=1))
    first = await app.ws("/v1/streams/raw")
    await only_session(app)
    second = await app.ws("/v1/streams/raw")
    msg = await second.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE and second.close_code == 1013
    assert "capacity" in msg.extra
    assert len(app.sessions()) == 1
    await first.close()


@pytest.mark.parametrize("bad, code", [
    ("text:{not json", 1007), ("text:[1, 2]", 1007), ('text:{"type": 5}', 1007),
    ('text:{"type": "dtmf", "digit": "x"}', 1007), ("binary:\x01\x02\x03", 1007), ("binary:", 1007),
])
async def test_repeated_malformed_messages_close_the_stream(make_app, bad: str, code: int) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()  # max_faults = 3
    ws = await app.ws("/v1/streams/raw")
    got = Collector(ws)
    session = await only_session(app)
    kind, _, data = bad.partition(":")
    for i in range(3):
        if i == 1:
            await ws.send_str('{"type": "future-extension"}')  # well-formed and unknown: ignored, no fault
        await (ws.send_str(data) if kind == "text" else ws.send_bytes(data.encode("latin-1")))
    assert await got.closed() == code
    await eventually(lambda: session.state is SessionState.ENDED, what="the end")
    assert session.end_reason is not None and session.end_reason.startswith("transport closed: malformed")
    stats = session.endpoint.stats()  # type: ignore[union-attr]
    assert stats["faults"] == 3 and stats["ignored"] == 1


async def test_one_malformed_message_is_dropped_and_the_call_goes_on(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app()
    ws = await app.ws("/v1/streams/raw")
    got = Collector(ws)
    session = await only_session(app)
    await ws.send_str("{oops")
    await ws.send_bytes(np.zeros(320, "<i2").tobytes())
    await eventually(lambda: bool(got.binary), what="audio after the fault")
    assert session.state is SessionState.ACTIVE and session.endpoint.stats()["faults"] == 1  # type: ignore[union-attr]
    await ws.close()


async def test_an_oversized_message_closes_1009(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(config(max_message=4096))
    ws = await app.ws("/v1/streams/raw")
    got = Collector(ws)
    session = await only_session(app)
    await ws.send_bytes(b"\0" * 5000)
    assert await got.closed() == 1009
    await eventually(lambda: session.state is SessionState.ENDED, what="the end")


async def test_a_silent_peer_times_out(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(config(idle_timeout=0.5))
    ws = await app.ws("/v1/streams/raw")
    got = Collector(ws)
    session = await only_session(app)
    assert await got.closed(timeout=10) == 1008
    await eventually(lambda: session.state is SessionState.ENDED, what="the end")
    assert session.end_reason == "peer gone: silent"


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_the_raw_text_parser_raises_only_its_own_error(text: str) -> None:
    try:
        RawDialect().on_text(text, True)
    except StreamError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=700), st.sampled_from(["pcm16", "ulaw"]))
def test_the_raw_binary_parser_raises_only_its_own_error(data: bytes, encoding: str) -> None:
    dialect = RawDialect()
    dialect.start_at_upgrade({"encoding": encoding, "rate": "16000" if encoding == "pcm16" else "8000"})
    try:
        dialect.on_binary(data, True)
    except StreamError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["encoding", "rate", "agent"]), st.text(max_size=12)))
def test_the_raw_query_parser_raises_only_its_own_error(query: dict[str, str]) -> None:
    try:
        RawDialect().start_at_upgrade(query)
    except StreamError:
        pass
