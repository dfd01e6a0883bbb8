"""The runtime builds real sessions on any transport: a WebRTC call from an aiortc
peer on loopback through the echo agent, and the pipeline's shape for each kind
of wire (encoded or decoded, at the agent's rate or not)."""

from __future__ import annotations

import asyncio

import numpy as np
from aiortc import RTCSessionDescription

import pytest

from voxline.codecs import PCMU, l16
from voxline.config import ServiceConfig
from voxline.control.runtime import Runtime
from voxline.control.session import SessionRegistry, SessionState
from voxline.media.clock import LoopClock
from voxline.providers.factory import Providers
from voxline.transports.loopback import LoopbackTransport
from voxline.transports.webrtc import WebRTCConfig
from voxline.transports.webrtc_call import WebRTCTransport

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

    transport = WebRTCTransport(WebRTCConfig(ice_hosts=("127.0.0.1",), inbound_rate=48000))
    await runtime.open(session, transport)
    answer = await transport.accept(pc.localDescription.sdp)
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
    # 48 kHz PCM on the wire (aiortc speaks Opus itself): both resamplings are stages
    assert [s["name"] for s in info["stats"]["stages"]] == ["resample_in", "vad", "agent", "resample_out", "playout"]
    await pc.close()
    await session.end("hangup")
    assert session.state is SessionState.ENDED and len(registry) == 0
    await runtime.stop()


@pytest.mark.parametrize(
    ("codec", "agent", "stages"),
    [
        # G.711 at 8 kHz: decoded and resampled in, resampled and encoded out
        (PCMU, "assistant", ["decode", "resample_in", "vad", "agent", "resample_out", "playout", "encode"]),
        # 16 kHz L16, the agent's own rate: bytes to samples and back, no resampling
        (l16(16000), "echo", ["decode", "vad", "agent", "playout", "encode"]),
        # transcription says nothing: no egress at all
        (PCMU, "transcribe", ["decode", "resample_in", "vad", "agent"]),
    ],
)
async def test_the_pipeline_has_the_stages_its_wire_needs(codec, agent: str, stages: list[str]) -> None:
    clock = LoopClock()
    providers = Providers(FakeSTT(clock), FakeLLM(clock, "hi"), FakeTTS(clock), FakeTTS(clock, "offline"))
    registry = SessionRegistry(4)
    runtime = Runtime(ServiceConfig(vad="webrtc"), registry, providers=providers)
    await runtime.start()
    s = registry.admit("t", "loopback", agent)
    pipe = runtime.build(s, LoopbackTransport(codec))
    assert [st["name"] for st in pipe.stats()["stages"]] == stages  # type: ignore[index]
    if agent == "assistant":
        assert pipe.budget.segment("transcript") is not None and pipe.budget.total > 0.5
    await runtime.stop()


async def test_an_unknown_agent_is_refused_and_the_session_ended() -> None:
    registry = SessionRegistry(4)
    runtime = Runtime(ServiceConfig(vad="webrtc", agent="echo"), registry)
    await runtime.start()
    bad = registry.admit("t", "loopback", "parrot")
    transport = LoopbackTransport(PCMU)
    with pytest.raises(ValueError, match="agent must be one of"):
        await runtime.open(bad, transport)
    assert bad.state is SessionState.ENDED and transport.closed and len(registry) == 0
    await runtime.stop()


@pytest.mark.parametrize("quality", ["hq", "fast"])
async def test_the_call_audio_is_resampled_at_the_configured_quality(quality: str) -> None:
    registry = SessionRegistry(4)
    runtime = Runtime(ServiceConfig(vad="webrtc", agent="echo", resample=quality), registry)
    await runtime.start()
    s = registry.admit("t", "loopback", "echo")
    pipe = runtime.build(s, LoopbackTransport(PCMU))
    resamplers = [st for st in pipe._stages if st.name.startswith("resample_")]
    assert [r.name for r in resamplers] == ["resample_in", "resample_out"]
    assert all(r._rs.quality == quality for r in resamplers)  # type: ignore[union-attr]
    await runtime.stop()
