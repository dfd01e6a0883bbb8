"""The transport contract, proven on the in-process loopback transport: real audio
through the whole pipeline (decode, resample, VAD, agent, resample, playout,
encode) and back, what the caller heard at a barge-in, and a door that needs
nothing but its registration line."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voxline.codecs import PCMA, PCMU, l16
from voxline.config import ServiceConfig
from voxline.control.admission import Admission
from voxline.control.doors import CallService, load_doors
from voxline.control.runtime import Runtime
from voxline.control.session import SessionRegistry, SessionState
from voxline.media.frames import Audio, Mark
from voxline.media.playout import Playout, PlayoutMode
from voxline.transports import DOORS
from voxline.transports.base import SinkMode
from voxline.transports.loopback import LoopbackTransport

from .probe import probe_signal, windowed_match

FRAME = 0.02


async def echo_runtime(max_sessions: int = 4) -> tuple[Runtime, SessionRegistry]:
    registry = SessionRegistry(max_sessions)
    runtime = Runtime(ServiceConfig(agent="echo", vad="webrtc"), registry)
    await runtime.start()
    return runtime, registry


async def talk(transport: LoopbackTransport, pcm: np.ndarray) -> None:
    """Send ``pcm`` in real time, 20 ms frames on an absolute schedule."""
    n = transport.traits.media.frame_samples
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for k in range(len(pcm) // n):
        await asyncio.sleep(max(0.0, t0 + k * FRAME - loop.time()))
        transport.peer.say(pcm[k * n : (k + 1) * n])


@pytest.mark.parametrize("codec", [PCMU, PCMA, l16(16000)], ids=["pcmu", "pcma", "l16-16k"])
async def test_echo_comes_back_through_the_whole_pipeline(codec) -> None:  # type: ignore[no-untyped-def]
    runtime, registry = await echo_runtime()
    session = registry.admit("t", "loopback", "echo")
    transport = LoopbackTransport(codec)
    await runtime.open(session, transport)
    transport.connect()
    assert session.state is SessionState.ACTIVE
    rate = codec.rate
    sig = probe_signal(rate, 2.0)
    await talk(transport, np.tile(sig, 2))
    await asyncio.sleep(0.2)
    got = np.concatenate([r.pcm for r in transport.peer.received])
    corr = windowed_match(got[-rate:], sig, rate)
    assert corr > 0.7, f"what came back does not match what was sent ({corr:.3f})"
    stages = [s["name"] for s in session.info(detail=True)["stats"]["stages"]]
    expected = ["decode", "vad", "agent", "playout", "encode"]
    if rate != 16000:
        expected[1:1] = ["resample_in"]
        expected[-2:-2] = ["resample_out"]
    assert stages == expected
    budget = session.pipeline.budget  # type: ignore[union-attr]
    declared = dict(budget.stages)
    assert set(declared) >= set(expected)
    assert declared["playout"] == pytest.approx(FRAME)  # one frame of hand-off: the whole egress
    if rate != 16000:
        assert declared["resample_in"] > 0  # the resampler's look-ahead is on the path
    transport.hang_up()
    for _ in range(50):
        if session.state is SessionState.ENDED:
            break
        await asyncio.sleep(0.02)
    assert session.state is SessionState.ENDED and session.end_reason == "hangup"
    assert len(registry) == 0
    await runtime.stop()


async def test_dtmf_from_the_peer_reaches_the_agent_as_an_event() -> None:
    runtime, registry = await echo_runtime()
    session = registry.admit("t", "loopback", "echo")
    transport = LoopbackTransport()
    await runtime.open(session, transport)
    transport.connect()
    sub = session.events.subscribe(depth=64)
    transport.peer.press("7")
    digits = []
    while (event := await sub.get(timeout=1.0)) is not None:
        if event["kind"] == "dtmf":
            digits.append(event["data"]["digit"])
            break
    await session.end("done")
    await runtime.stop()
    assert digits == ["7"]


@pytest.mark.parametrize("far_end", [0.0, 0.2])
async def test_at_a_barge_in_heard_is_within_a_frame_of_what_the_peer_played(far_end: float) -> None:
    """Push sink: the far end holds ``far_end`` s before playing; playout's heard()
    must agree with what the peer actually played, not with what was sent."""
    runtime, registry = await echo_runtime()
    session = registry.admit("t", "loopback", "echo")
    transport = LoopbackTransport(l16(16000), far_end_buffer=far_end)
    pipeline = await runtime.open(session, transport)
    transport.connect()
    tone = (np.sin(np.arange(16000 * 3) * 2 * np.pi * 440 / 16000) * 8000).astype(np.int16)
    play = pipeline.stage("playout")
    assert isinstance(play, Playout) and play.mode is PlayoutMode.PUSH
    # A 3 s reply of turn 9 queued at once, as TTS would.
    await pipeline._segments[-1].link.put(Audio(tone, 16000, 0, 0.0, 9))  # type: ignore[union-attr]
    await asyncio.sleep(0.7)
    pipeline.interrupt("barge-in", after="agent")  # the Interrupt reaches the sink: clear() at the far end
    await asyncio.sleep(0.3)  # past the far end's buffer: nothing more will be heard
    peer_heard = sum(len(r.pcm) for r in transport.peer.heard(turn=9)) / 16000
    assert peer_heard > 0.3
    assert abs(play.heard(9) - peer_heard) <= FRAME + 1e-9, (play.heard(9), peer_heard)
    await session.end("done")
    await runtime.stop()


async def test_pull_sink_counts_heard_when_the_peer_takes_a_frame() -> None:
    from voxline.media.clock import FakeClock
    from voxline.media.pipeline import Pipeline

    clock = FakeClock()
    play = Playout(16000, mode=PlayoutMode.PULL)
    pipe = Pipeline([play], clock=clock)
    await pipe.start()
    await pipe.send(Audio(np.full(16000, 100, np.int16), 16000, 0, 0.0, 3))
    await pipe.send(Mark("end", turn=3))
    pulled: list[Audio | None] = []

    async def take(n: int) -> None:  # the peer, pulling one frame per slot
        for _ in range(n):
            pulled.append(await play.pull())

    taker = asyncio.ensure_future(take(20))
    while not taker.done():  # slots fall due as the clock passes them
        await clock.advance(FRAME / 2)
    taken = sum(1 for f in pulled if f is not None and f.turn == 3)
    assert taken == 20
    assert play.heard(3) == pytest.approx(taken * FRAME)
    pipe.interrupt("barge-in")
    await clock.settle()
    taker = asyncio.ensure_future(take(1))
    while not taker.done():
        await clock.advance(FRAME / 2)
    assert pulled[-1] is None  # the frame in the hand-off was never heard
    assert play.heard(3) == pytest.approx(taken * FRAME)
    await pipe.stop()


async def test_the_loopback_door_is_a_registration_line_and_admits_like_any_other() -> None:
    assert "loopback" in DOORS
    runtime, registry = await echo_runtime(max_sessions=1)
    cfg = ServiceConfig(agent="echo", vad="webrtc")
    service = CallService(cfg, Admission(registry), lambda: runtime, ("assistant", "echo", "transcribe"))
    door = next(d for d in load_doors(cfg) if d.name == "loopback")
    assert door.start is not None
    await door.start(service)
    call, transport = await door.handle.dial("echo")
    assert call.state is SessionState.ACTIVE and transport.traits.sink is SinkMode.PUSH
    from voxline.transports.base import Refused

    with pytest.raises(Refused) as refused:
        await door.handle.dial("echo")
    assert refused.value.code == "capacity"
    assert service.admission.refused == {("capacity", "loopback"): 1}
    await call.end("done")
    await runtime.stop()
