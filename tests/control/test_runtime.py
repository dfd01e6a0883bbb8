"""The runtime builds real sessions: a WebRTC call from an aiortc peer on loopback
through the echo agent, and the assistant's pipeline shape."""

from __future__ import annotations

import asyncio

import numpy as np
from aiortc import RTCSessionDescription

from voxline.config import ServiceConfig
from voxline.control.runtime import Runtime
from voxline.control.session import SessionRegistry, SessionState
from voxline.media.clock import LoopClock
from voxline.providers.factory import Providers

from ..agent.fakes import FakeLLM, FakeSTT, FakeTTS
from ..transports.probe import SignalTrack, probe_signal, windowed_match
from ..transports.test_webrtc import loopback_client


async def test_echo_call_over_webrtc_comes_back_and_ends_cleanly() -> None:
    cfg = ServiceConfig(agent="echo", vad="webrtc", ice_hosts=("127.0.0.1",))
    registry = SessionRegistry(4)
    runtime = Runtime(cfg, registry)
    await runtime.start()
    assert runtime.readiness() == {"models": True, "vad": True}
    session = registry.admit("t", "webrtc", "echo")
    sig = probe_signal(48000, 2.0)
    pc = await loopback_client(SignalTrack(sig))
    heard: list[np.ndarray] = []
    got_track = asyncio.Event()

    @pc.on("track")
    def on_track(track):  # type: ignore[no-untyped-def]
        async def read() -> None:
            while True:
                frame = await track.recv()
                pcm = frame.to_ndarray().reshape(-1)
                channels = len(frame.layout.channels)
                heard.append(pcm[::channels] if channels > 1 else pcm)  # packed s16
        got_track.set()
        asyncio.ensure_future(read())

    answer = await runtime.webrtc_offer(session, pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    for _ in range(100):
        if session.state is SessionState.ACTIVE and sum(len(h) for h in heard) > 48000 * 2:
            break
        await asyncio.sleep(0.05)
    assert session.state is SessionState.ACTIVE
    echoed = np.concatenate(heard)[-48000:].astype(np.int16)
    corr = windowed_match(echoed, sig, 48000)  # the probe loops: match window by window
    print(f"echo over WebRTC: correlation {corr:.3f}")
    assert corr > 0.8  # what came back is what was sent
    info = session.info(detail=True)
    assert {s["name"] for s in info["stats"]["stages"]} >= {"vad", "agent", "resample_out", "playout"}
    await pc.close()
    await session.end("hangup")
    assert session.state is SessionState.ENDED and len(registry) == 0
    await runtime.stop()


async def test_assistant_pipeline_shape_and_refusal_of_unknown_agents() -> None:
    clock = LoopClock()
    providers = Providers(FakeSTT(clock), FakeLLM(clock, "hi"), FakeTTS(clock), FakeTTS(clock, "offline"))
    registry = SessionRegistry(4)
    runtime = Runtime(ServiceConfig(vad="webrtc"), registry, providers=providers)
    await runtime.start()
    s = registry.admit("t", "webrtc", "assistant")
    pipe = runtime.build(s, 8000, lambda f: None)
    assert [st["name"] for st in pipe.stats()["stages"]] == ["vad", "agent", "resample_out", "playout"]  # type: ignore[index]
    assert pipe.budget.segment("transcript") is not None and pipe.budget.total > 0.5
    bad = registry.admit("t", "webrtc", "parrot")
    try:
        runtime.build(bad, 8000, lambda f: None)
    except ValueError as exc:
        assert "agent must be one of" in str(exc)
    else:
        raise AssertionError("an unknown agent was accepted")
    await runtime.stop()
