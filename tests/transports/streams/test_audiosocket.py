"""Asterisk AudioSocket over real TCP against the running app with the echo agent,
replaying what Asterisk sends (res/res_audiosocket.c: the UUID first, then
slin frames every 20 ms, DTMF, hangup): the echo matches what was sent at 8
and 16 kHz, digits reach the agent, hangup both ways, refusals and malformed
input end in a hangup; the framer fuzzed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxline.control.app import DOORS as APP_DOORS
from voxline.control.session import SessionState
from voxline.transports import DOORS
from voxline.transports.audiosocket import wire
from voxline.transports.audiosocket.wire import AudioSocketError, Framer, Message

from ..probe import probe_signal, windowed_match
from .helpers import TOKEN, App, config, eventually, frames, make_app, only_session, send_realtime

__all__ = ["make_app"]

CALL_UUID = uuid.UUID("6f0c8a5e-4c1b-4b8e-9a53-0e2d3c4b5a69")


def as_config(**kw: Any) -> Any:
    return dataclasses.replace(config(**kw.pop("streams", {})), audiosocket_port=0, **kw)


def port_of(app: App) -> int:
    door = next(d for d in app.app[APP_DOORS] if d.name == "audiosocket")
    port = door.handle.port
    assert port, "the AudioSocket listener is not up"
    return int(port)


class Asterisk:
    """Asterisk's side of one AudioSocket connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.got: list[Message] = []
        self.task = asyncio.ensure_future(self._read())

    @classmethod
    async def dial(cls, app: App) -> "Asterisk":
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(app))
        return cls(reader, writer)

    async def _read(self) -> None:
        framer = Framer()
        while data := await self.reader.read(4096):
            self.got.extend(framer.feed(data))

    async def send(self, kind: int, payload: bytes = b"") -> None:
        self.writer.write(bytes(Message(kind, payload)))
        await self.writer.drain()

    async def raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def of(self, kind: int) -> list[Message]:
        return [m for m in self.got if m.kind == kind]

    async def closed(self, timeout: float = 5.0) -> None:
        """voxline closed the connection (after its hangup, if it sent one)."""
        await asyncio.wait_for(self.task, timeout)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@pytest.mark.parametrize("kind, rate", [(0x10, 8000), (0x12, 16000), (0x16, 48000)], ids=["slin-8k", "slin16", "slin48"])
async def test_a_whole_audiosocket_call_with_the_echo_agent(make_app, kind: int, rate: int) -> None:  # type: ignore[no-untyped-def]
    assert "audiosocket" in DOORS
    app = await make_app(as_config())
    ast = await Asterisk.dial(app)
    await ast.send(wire.UUID, CALL_UUID.bytes)
    sig = probe_signal(rate, 1.0)
    chunks = [f.astype("<i2").tobytes() for f in frames(np.tile(sig, 2), rate // 50)]
    sender = asyncio.ensure_future(send_realtime(lambda c: ast.send(kind, c), chunks))
    session = await only_session(app)
    assert session.transport == "audiosocket" and session.extra["audiosocket_uuid"] == str(CALL_UUID)
    events = session.events.subscribe(depth=512)
    await sender
    await eventually(lambda: len(ast.of(kind)) >= 90, what="the echo")
    assert {m.kind for m in ast.got} == {kind}  # answered at the call's own rate, audio only
    assert all(len(m.payload) == rate // 50 * 2 for m in ast.got)
    back = np.frombuffer(b"".join(m.payload for m in ast.got), "<i2").astype(np.int16)
    corr = windowed_match(back[-rate:], sig, rate)
    assert corr > 0.7, f"what came back does not match what was sent ({corr:.3f})"
    assert session.endpoint.stats()["rate"] == rate  # type: ignore[union-attr]

    await ast.send(wire.DTMF, b"5")
    digit = None
    while (event := await events.get(timeout=5.0)) is not None:
        if event["kind"] == "dtmf":
            digit = event["data"]["digit"]
            break
    assert digit == "5"

    await ast.send(wire.HANGUP)
    await eventually(lambda: session.state is SessionState.ENDED, what="the end")
    assert session.end_reason == "hangup"  # the far end hung up: a reason of its own (runtime.CallPort)
    await ast.closed()


async def test_voxline_hangs_up_when_the_agent_ends_the_call(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(as_config())
    ast = await Asterisk.dial(app)
    await ast.send(wire.UUID, CALL_UUID.bytes)
    await ast.send(0x10, b"\0" * 320)
    session = await only_session(app)
    resp = await app.client.delete(f"/v1/sessions/{session.id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 204
    await ast.closed()
    assert ast.got[-1] == Message(wire.HANGUP)
    assert session.end_reason == "deleted"


async def test_admission_refusal_is_a_hangup(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(as_config(max_sessions=1))
    first = await Asterisk.dial(app)
    await first.send(wire.UUID, CALL_UUID.bytes)
    await first.send(0x10, b"\0" * 320)
    await only_session(app)
    second = await Asterisk.dial(app)
    await second.send(wire.UUID, uuid.uuid4().bytes)
    await second.send(0x10, b"\0" * 320)
    await second.closed()
    assert second.got == [Message(wire.HANGUP)]
    assert len(app.sessions()) == 1
    await first.close()


async def test_a_silent_peer_and_a_never_started_one_time_out(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(as_config(streams={"idle_timeout": 0.5, "start_timeout": 0.5}))
    silent = await Asterisk.dial(app)
    await silent.send(wire.UUID, CALL_UUID.bytes)
    await silent.send(0x10, b"\0" * 320)
    session = await only_session(app)
    never = await Asterisk.dial(app)  # connects and sends nothing
    no_audio = await Asterisk.dial(app)
    await no_audio.send(wire.UUID, uuid.uuid4().bytes)  # a UUID and then nothing
    for peer in (silent, never, no_audio):
        await peer.closed(timeout=10)
        assert peer.got[-1] == Message(wire.HANGUP)
    assert session.end_reason == "transport closed: peer silent"
    await eventually(lambda: app.sessions() == [], what="the end")


@pytest.mark.parametrize("first", [
    bytes(Message(0x10, b"\0" * 320)),  # audio before the UUID
    bytes(Message(wire.UUID, b"\x01" * 15)),  # a UUID of 15 bytes
    bytes(Message(0x42, b"x")),
    b"\x01\x00",  # a truncated header, then the end of the stream
])
async def test_a_bad_first_message_is_a_hangup_and_no_session(make_app, first: bytes) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(as_config())
    ast = await Asterisk.dial(app)
    await ast.raw(first)
    if len(first) < 3:
        ast.writer.write_eof()
    await ast.closed()
    assert ast.got == [Message(wire.HANGUP)] and app.sessions() == []
    door = next(d for d in app.app[APP_DOORS] if d.name == "audiosocket")
    assert door.handle.faults == 1


@pytest.mark.parametrize("bad", [
    bytes(Message(0x12, b"\0" * 640)),  # 16 kHz audio on an 8 kHz call
    bytes(Message(0x42, b"what")),  # an unknown kind
    bytes(Message(0x10, b"\0" * 321)),  # half a sample
    bytes(Message(0x10)),  # empty audio
    bytes(Message(wire.DTMF, b"55")),
    bytes(Message(wire.DTMF, b"x")),
])
async def test_repeated_malformed_messages_end_the_call(make_app, bad: bytes) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(as_config())  # max_faults = 3
    ast = await Asterisk.dial(app)
    await ast.send(wire.UUID, CALL_UUID.bytes)
    await ast.send(0x10, b"\0" * 320)
    session = await only_session(app)
    await ast.raw(bad)
    await ast.send(0x10, b"\0" * 320)  # the call goes on after one
    await eventually(lambda: session.endpoint.stats()["media_in"] == 2, what="audio after a fault")  # type: ignore[union-attr]
    assert session.state is SessionState.ACTIVE
    await ast.raw(bad + bad)
    await ast.closed()
    assert ast.got[-1] == Message(wire.HANGUP)
    await eventually(lambda: session.state is SessionState.ENDED, what="the end")
    assert session.end_reason is not None and session.end_reason.startswith("transport closed: malformed")
    assert session.endpoint.stats()["faults"] == 3  # type: ignore[union-attr]


async def test_a_truncated_frame_at_the_end_and_an_asterisk_error_end_the_call(make_app) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(as_config())
    ast = await Asterisk.dial(app)
    await ast.send(wire.UUID, CALL_UUID.bytes)
    await ast.send(0x10, b"\0" * 320)
    session = await only_session(app)
    await ast.raw(bytes(Message(0x10, b"\0" * 320))[:100])
    ast.writer.write_eof()
    await eventually(lambda: session.state is SessionState.ENDED, what="the end")
    assert session.end_reason is not None and session.end_reason.startswith("transport closed: truncated")

    ast = await Asterisk.dial(app)
    await ast.send(wire.UUID, CALL_UUID.bytes)
    await ast.send(0x10, b"\0" * 320)
    session = await only_session(app)
    await ast.send(wire.ERROR, b"\x02")
    await ast.closed()
    assert session.end_reason == "transport closed: asterisk error 02"


def test_framing_is_the_header_s_bytes_exactly() -> None:
    assert wire.hangup() == b"\x00\x00\x00"
    assert bytes(Message(wire.UUID, CALL_UUID.bytes))[:3] == b"\x01\x00\x10"
    assert wire.audio(0x12, b"\x01\x02" * 320)[:3] == b"\x12\x02\x80"
    assert Message.parse(b"\x03\x00\x01#") == Message(wire.DTMF, b"#")
    assert wire.digit_of(Message.parse(b"\x03\x00\x01#")) == "#"
    for data, error in ((b"\x10\x00", "shorter than its 3-byte header"), (b"\x10\x00\x02\x00", "says 2, payload has 1")):
        with pytest.raises(AudioSocketError, match=error):
            Message.parse(data)
    assert wire.RATES[0x10] == 8000 and wire.RATES[0x12] == 16000 and wire.RATES[0x18] == 192000


messages = st.builds(Message, st.sampled_from([0x00, 0x01, 0x03, 0x10, 0x12, 0x18, 0x42, 0xFF]),
                     st.binary(max_size=400))


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, max_size=8), st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_the_framer_returns_what_was_sent_however_it_is_split(msgs: list[Message], cuts: list[int]) -> None:
    data = b"".join(bytes(m) for m in msgs)
    framer, got, pos, i = Framer(), [], 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        got += framer.feed(data[pos : pos + step])
        pos += step
        i += 1
    assert got == msgs and framer.pending == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_the_parsers_raise_only_their_own_error(data: bytes) -> None:
    for msg in Framer().feed(data):  # the framer itself never raises
        for check in (wire.uuid_of, wire.digit_of):
            try:
                check(msg)
            except AudioSocketError:
                pass
    try:
        Message.parse(data)
    except AudioSocketError:
        pass


async def test_the_uuid_picks_the_agent_through_configuration(make_app) -> None:  # type: ignore[no-untyped-def]
    other = uuid.uuid4()
    app = await make_app(as_config(audiosocket_agents=(f"{CALL_UUID}=echo", f"{other}=nobody")))
    ast = await Asterisk.dial(app)
    await ast.send(wire.UUID, other.bytes)  # mapped to an agent the service does not have
    await ast.send(0x10, b"\0" * 320)
    await ast.closed()
    assert ast.got == [Message(wire.HANGUP)] and app.sessions() == []
    ast = await Asterisk.dial(app)
    await ast.send(wire.UUID, CALL_UUID.bytes)
    await ast.send(0x10, b"\0" * 320)
    session = await only_session(app)
    assert session.agent_kind == "echo"
    await ast.close()


def test_audiosocket_agents_entries_are_checked() -> None:
    from voxline.config import ConfigError
    from voxline.transports.audiosocket.server import agents_by_uuid

    assert agents_by_uuid([f" {CALL_UUID} = echo "]) == {CALL_UUID: "echo"}
    for bad in ("echo", f"{CALL_UUID}=", "not-a-uuid=echo"):
        with pytest.raises(ConfigError, match="audiosocket_agents"):
            agents_by_uuid([bad])
