"""WebRTC transport against real peers: an aiortc client in-process, and headless Chromium.

Every connection is pinned to loopback. In-process, both sides offer 127.0.0.1
only (``ice_scan_interfaces=False``). Chromium has no switch to keep WebRTC off
the other interfaces, so its test runs in a network namespace that has only
``lo`` (as PEERS.md asks of tests that must not reach past loopback), which is
also the case ``ice_hosts`` exists for.
Delays and correlations are measured and printed (``-s`` shows them); the
assertions are on content, never on time.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voxline.media.clock import FakeClock
from voxline.media.frames import Audio
from voxline.media.pipeline import Pipeline
from voxline.media.playout import Playout, PlayoutMode
from voxline.media.resample import Resample, resample_chunk
from voxline.transports.webrtc import InboundReader, OutboundTrack, WebRTCConfig, WebRTCEndpoint, gather_candidates

from .probe import (
    ScriptedTrack,
    SignalTrack,
    best_match,
    decoded,
    echo_delays,
    latency,
    loopback_only_network,
    probe_signal,
    windowed_match,
    write_wav,
)

PAGE = Path(__file__).with_name("webrtc_page.html")
CHROMIUM = "/usr/bin/chromium"
LOOPBACK = WebRTCConfig(ice_hosts=("127.0.0.1",), ice_scan_interfaces=False, connect_timeout=10.0)
DEADLINE = 20.0  # seconds for any one thing a test waits for


# -- an aiortc client on loopback ------------------------------------------------


def echo_pipeline(ep: WebRTCEndpoint) -> Pipeline:
    """What the runtime does for an echo call, in miniature: the endpoint's audio
    into a pipeline, and the outgoing track pulling from its playout."""
    rate = ep.config.inbound_rate
    play = Playout(48000, mode=PlayoutMode.PULL)
    stages: list[Any] = [Resample(rate, 48000, "hq")] if rate != 48000 else []
    pipe = Pipeline([*stages, play])
    ep.on_audio = pipe.push
    ep.outbound.source = play.pull
    return pipe


async def loopback_client(track: MediaStreamTrack) -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(track)
    offer = await pc.createOffer()
    await gather_candidates(pc, ("127.0.0.1",), scan_interfaces=False)
    await pc.setLocalDescription(offer)
    return pc


def candidate_hosts(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


class Collector:
    """An on_audio consumer that wakes the test once it holds enough frames."""

    def __init__(self, want: int) -> None:
        self.frames: list[Audio] = []
        self.want = want
        self.enough = asyncio.Event()

    def __call__(self, frame: Audio) -> None:
        self.frames.append(frame)
        if len(self.frames) >= self.want:
            self.enough.set()


# -- in-process: aiortc peer ---------------------------------------------------


async def test_peer_audio_arrives_as_20ms_frames_matching_what_was_sent(no_leaked_tasks: None) -> None:
    sent = probe_signal(48000)
    got = Collector(want=150)  # 3 s
    states: list[str] = []
    ep = WebRTCEndpoint(LOOPBACK, on_audio=got, on_state=states.append, name="peer")
    source = SignalTrack(sent)
    client = await loopback_client(source)
    try:
        answer = await ep.accept(client.localDescription.sdp)
        await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await ep.wait_connected(DEADLINE)
        await asyncio.wait_for(got.enough.wait(), DEADLINE)
    finally:
        await client.close()
        await ep.close()

    assert candidate_hosts(answer) == {"127.0.0.1"} == candidate_hosts(client.localDescription.sdp)
    assert states[0] == "connecting" and "connected" in states and states[-1] == "closed"
    frames = got.frames
    assert all(type(f) is Audio and f.rate == 16000 and f.pcm.dtype == np.int16 for f in frames)
    assert all(f.pcm.shape == (320,) for f in frames)
    steps = np.diff([f.pts for f in frames])
    assert (steps > 0).all() and (steps % 320 == 0).all(), f"pts steps {sorted(set(steps))}"
    assert (np.diff([f.arrival for f in frames]) >= 0).all()

    pcm = np.concatenate([f.pcm for f in frames[-100:]])  # the last 2 s, past any start-up
    ref = np.tile(resample_chunk(sent, 48000, 16000), 3)
    lag, corr = best_match(pcm, ref, range(0, 32000))
    assert source.start is not None
    one_way = latency(frames[-100].arrival, source.start, lag * 3, len(sent), 48000)
    print(f"\npeer -> endpoint: correlation {corr:.3f}, latency {one_way * 1000:.0f} ms; stats {ep.stats().as_dict()}")
    assert corr > 0.8
    assert ep.stats().frames_in == len(frames) and ep.stats().dropped_in == 0


async def test_echo_through_a_pulled_playout_reaches_the_peer(no_leaked_tasks: None) -> None:
    sent = probe_signal(48000)
    ep = WebRTCEndpoint(LOOPBACK, name="echo")
    pipe = echo_pipeline(ep)
    await pipe.start()
    source = SignalTrack(sent)
    client = await loopback_client(source)
    heard: list[npt.NDArray[Any]] = []
    heard_at: list[float] = []
    enough = asyncio.Event()
    want = 48000 * 4

    async def listen(track: MediaStreamTrack) -> None:
        total = 0
        while total < want:
            frame = await track.recv()
            assert isinstance(frame, av.AudioFrame)
            pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
            heard.append(pcm)
            heard_at.append(asyncio.get_running_loop().time())
            total += len(pcm)
        enough.set()

    tasks: list[asyncio.Task[None]] = []
    client.on("track", lambda track: tasks.append(asyncio.ensure_future(listen(track))))
    try:
        answer = await ep.accept(client.localDescription.sdp)
        await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.wait_for(enough.wait(), DEADLINE)
    finally:
        await client.close()
        await ep.close()
        await pipe.stop("test over")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    counts = np.cumsum([len(p) for p in heard])
    first = int(np.searchsorted(counts, counts[-1] - 48000 * 2, side="right")) + 1
    echo = np.concatenate(heard[first:])  # about the last 2 s, from a frame boundary
    lag, corr = best_match(echo, np.tile(sent, 3), range(0, 96000))
    assert source.start is not None
    round_trip = latency(heard_at[first], source.start, lag, len(sent), 48000)
    stats = ep.stats()
    print(f"\npeer -> endpoint -> peer: correlation {corr:.3f}, round trip {round_trip * 1000:.0f} ms; stats {stats.as_dict()}")
    assert corr > 0.7
    assert stats.frames_out > 0 and stats.malformed_out == 0


_SECURE = "v=0\r\na=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
_ICE = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"


@pytest.mark.parametrize(
    ("offer", "sdp_type", "message"),
    [
        ("", "offer", "does not start with 'v=0'"),
        (b"v=0\r\n", "offer", "must be SDP text"),
        ("v=0\r\nm=audio 9 RTP/AVP 0\r\n", "answer", "must be 'offer'"),
        ("v=0\r\n" + "a=x\r\n" * 20000, "offer", "more than the 65536 allowed"),
        ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "offer", "no audio"),
        ("v=0\r\nm=audio 9 RTP/AVP 0\x00\r\n", "offer", "NUL"),
        ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n", "offer", "no a=fingerprint"),
        (_SECURE + "m=audio 9 RTP/AVP 0\r\n", "offer", "lacks a=ice-ufrag"),
        (_SECURE + _ICE + "m=audio x\r\n", "offer", "rejected"),
        (_SECURE + _ICE + "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n" * 650, "offer", "650 m-lines, more than the 8"),
        (_SECURE + _ICE + "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
         + "a=candidate:1 1 udp 1 10.0.0.1 9 typ host\r\n" * 100, "offer", "100 ICE candidates"),
        ("v=0\r\nm=audio 9 RTP/AVP 0\r\na=" + "x" * 5000 + "\r\n", "offer", "a line of 5002 characters"),
    ],
    ids=["empty", "bytes", "answer", "huge", "video-only", "nul", "no-fingerprint", "no-ice", "garbage",
         "650-m-lines", "100-candidates", "long-line"],
)
async def test_bad_offers_are_refused_with_a_reason(
    offer: object, sdp_type: str, message: str, no_leaked_tasks: None
) -> None:
    ep = WebRTCEndpoint(LOOPBACK)
    with pytest.raises(ValueError, match=message):
        await ep.accept(offer, sdp_type)  # type: ignore[arg-type]
    await ep.close()
    assert ep.state == "closed"


async def test_close_is_idempotent_and_leaves_no_task(no_leaked_tasks: None) -> None:
    idle = WebRTCEndpoint(LOOPBACK)
    await idle.close()  # before accept
    await idle.close()

    ep = WebRTCEndpoint(LOOPBACK, on_audio=Collector(want=1))
    client = await loopback_client(SignalTrack(probe_signal(48000)))
    answer = await ep.accept(client.localDescription.sdp)
    await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await ep.wait_connected(DEADLINE)
    assert ep.inbound is not None
    await asyncio.gather(ep.close(), ep.close())  # concurrent callers share one close
    await ep.close()
    await client.close()
    assert ep.state == "closed" and ep.outbound.readyState == "ended"
    with pytest.raises(RuntimeError, match="already"):
        await ep.accept(client.localDescription.sdp)


async def test_an_unanswered_offer_times_out_and_closes(no_leaked_tasks: None) -> None:
    states: list[str] = []
    cfg = WebRTCConfig(ice_hosts=("127.0.0.1",), ice_scan_interfaces=False, connect_timeout=0.2)
    ep = WebRTCEndpoint(cfg, on_state=states.append)
    client = await loopback_client(SignalTrack(probe_signal(48000)))
    await ep.accept(client.localDescription.sdp)  # the answer never reaches the client
    with pytest.raises(ConnectionError, match="before connecting"):
        await ep.wait_connected(DEADLINE)  # the watchdog gives up at 0.2 s and closes
    await ep.wait_closed(DEADLINE)
    await ep.close()
    await client.close()
    assert "failed" in states and states[-1] == "closed"


# -- the inbound boundary, on a scripted track ---------------------------------


async def test_a_stalled_consumer_loses_the_oldest_frames_counted(no_leaked_tasks: None) -> None:
    track = ScriptedTrack([decoded(k) for k in range(40)])
    gate = asyncio.Event()
    delivered: list[Audio] = []

    async def stalled(frame: Audio) -> None:
        await gate.wait()
        delivered.append(frame)

    reader = InboundReader(track, stalled, capacity=5, deliver_timeout=DEADLINE, clock=FakeClock())
    reader.start()
    await asyncio.wait_for(track.exhausted.wait(), DEADLINE)
    assert reader.stats.dropped_in > 0
    gate.set()
    await reader.wait_ended(DEADLINE)
    await reader.stop()
    produced = reader.stats.frames_in + reader.stats.dropped_in
    print(f"\nproduced {produced}, delivered {reader.stats.frames_in}, dropped {reader.stats.dropped_in}")
    assert reader.stats.frames_in == len(delivered) <= 5 + 1  # the buffer, plus the one the consumer held
    assert delivered[-1].pts == (produced - 1) * 320  # the newest frame survived
    assert reader.stats.malformed_in == 0


async def test_malformed_frames_are_counted_and_gaps_keep_media_time(no_leaked_tasks: None) -> None:
    planar = av.AudioFrame(format="flt", layout="mono", samples=960)
    planar.sample_rate = 48000
    frames: list[object] = [decoded(0), planar, "not a frame", decoded(1), decoded(5, pts=5 * 960), decoded(6)]
    track = ScriptedTrack(frames)
    got: list[Audio] = []
    reader = InboundReader(track, got.append, capacity=50, clock=FakeClock(7.0))
    reader.start()
    await reader.wait_ended(DEADLINE)
    await reader.stop()
    assert reader.stats.malformed_in == 2 and reader.stats.gaps_in == 1
    pts = [f.pts for f in got]
    assert pts[0] == 0 and all(b > a for a, b in zip(pts, pts[1:]))
    assert max(np.diff(pts)) >= 3 * 320, f"the 60 ms gap should show in pts: {pts}"
    assert all(f.arrival == 7.0 and f.pcm.shape == (320,) for f in got)
    level = got[-1].pcm[-100:]
    assert abs(int(level.mean()) - 1006) < 20, "stereo should be averaged, not summed"


# -- the outbound track, on virtual time ---------------------------------------


async def test_outbound_track_gives_what_its_source_gives_and_silence_otherwise() -> None:
    clock = FakeClock(100.0, auto_advance=True)
    track = OutboundTrack(rate=48000, clock=clock)
    times: list[float] = []
    for _ in range(3):  # no source yet: silence, paced on the track's own clock
        assert not (await track.recv()).to_ndarray().any()
        times.append(clock.now())
    assert [round(t - times[0], 6) for t in times] == [0.0, 0.02, 0.04]

    script: list[Audio | None] = [
        Audio(np.full(960, 5000, dtype=np.int16), 48000),
        Audio(np.full(960, 7, dtype=np.int16), 48000),
        None,  # the source has nothing for this slot
        Audio(np.zeros(320, dtype=np.int16), 16000),  # not this track's frame: refused, counted
        Audio(np.full(960, 9, dtype=np.int16), 48000),
    ]

    async def source() -> Audio | None:
        return script.pop(0)  # the source paces: the track asks once per frame

    track.source = source
    out = [(await track.recv()).to_ndarray().reshape(-1) for _ in range(5)]
    assert [int(pcm[0]) for pcm in out] == [5000, 7, 0, 0, 9]
    assert all(len(pcm) == 960 for pcm in out)
    st = track.stats
    assert st.frames_out == 3 and st.malformed_out == 1 and st.underruns == 1 and st.silent_out == 3 + 2
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_a_pulled_playout_paces_the_track_and_marks_heard_when_taken() -> None:
    clock = FakeClock(0.0)
    play = Playout(48000, mode=PlayoutMode.PULL)
    pipe = Pipeline([play], clock=clock)
    track = OutboundTrack(rate=48000, clock=clock, source=play.pull)
    await pipe.start()
    await pipe.send(Audio(np.full(960 * 3, 11, dtype=np.int16), 48000, turn=1))
    got: list[tuple[float, int]] = []

    async def take(n: int) -> None:
        for _ in range(n):
            frame = await track.recv()
            got.append((clock.now(), int(frame.to_ndarray()[0, 0])))

    task = asyncio.ensure_future(take(5))
    for _ in range(10):
        await clock.advance(0.02)
    await asyncio.wait_for(task, DEADLINE)
    assert [v for _, v in got] == [11, 11, 11, 0, 0]
    assert [round(t, 6) for t, _ in got] == [0.0, 0.02, 0.04, 0.06, 0.08]  # one slot each, playout's clock
    assert play.heard(1) == pytest.approx(0.06)  # heard as taken: three frames, not a buffer ahead
    await pipe.stop("test over")
    track.stop()


# -- a real browser --------------------------------------------------------------


CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
]


@pytest.mark.slow
async def test_chromium_fake_mic_reaches_the_endpoint_and_hears_its_echo(
    tmp_path: Path, no_leaked_tasks: None
) -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} missing: install it with `apt-get install chromium` (part of the test install)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("playwright missing: `pip install playwright` (part of the test install)")
    from aiohttp import web

    rate = 48000
    sent = probe_signal(rate)
    wav = tmp_path / "mic.wav"
    write_wav(wav, sent, rate)
    inbound: list[Audio] = []
    states: list[str] = []
    ep = WebRTCEndpoint(LOOPBACK, on_state=states.append, name="chromium")
    pipe = echo_pipeline(ep)
    push = ep.on_audio

    def echo(frame: Audio) -> None:
        inbound.append(frame)
        push(frame)

    ep.on_audio = echo
    await pipe.start()
    loop = asyncio.get_running_loop()
    result: asyncio.Future[tuple[dict[str, str], bytes]] = loop.create_future()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.read_text(), content_type="text/html")

    async def offer(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            answer = await ep.accept(body.get("sdp"), body.get("type"))
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))
        return web.json_response({"type": "answer", "sdp": answer})

    async def posted(request: web.Request) -> web.Response:
        data = await request.read()
        if not result.done():
            if request.path == "/error":
                result.set_exception(AssertionError(f"page failed: {data.decode(errors='replace')}"))
            else:
                result.set_result((dict(request.query), data))
        return web.Response(text="ok")

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.add_routes([web.get("/", page), web.post("/offer", offer), web.post("/result", posted),
                    web.post("/error", posted)])
    runner = web.AppRunner(app)
    console: list[str] = []
    with loopback_only_network():  # the server, the browser and every socket between them see only lo
        assert [name for _, name in socket.if_nameindex()] == ["lo"]
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=CHROMIUM,
                    headless=True,
                    args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={wav}"],
                    ignore_default_args=["--mute-audio"],
                )
                try:
                    tab = await browser.new_page()
                    tab.on("console", lambda m: console.append(m.text))
                    await tab.goto(f"http://{host}:{port}/?seconds=4")
                    query, data = await asyncio.wait_for(result, 45)
                except (TimeoutError, AssertionError) as exc:
                    raise AssertionError(f"{exc or 'no result from the page'}; console: {console}") from exc
                finally:
                    await browser.close()
        finally:
            await ep.close()
            await pipe.stop("test over")
            await runner.cleanup()

    # The connection: loopback on both ends, as reported by Chromium itself.
    assert query["local"] == "127.0.0.1" == query["remote"], query
    assert "connected" in states

    # Chromium -> voxline: the fake microphone, as 20 ms 16 kHz frames.
    assert inbound and all(f.rate == 16000 and f.samples == 320 for f in inbound)
    got = np.concatenate([f.pcm for f in inbound[-100:]])  # the last 2 s
    in_corr = windowed_match(got, resample_chunk(sent, rate, 16000), 16000)

    # voxline -> Chromium: the echo, recorded beside the microphone in one AudioContext.
    both = np.frombuffer(data, dtype=np.int16).reshape(-1, 2)
    mic, heard = both[:, 0], both[:, 1]
    page_rate = int(float(query["rate"]))
    delays = echo_delays(mic, heard, page_rate)
    assert delays, f"the browser heard no echo; console: {console}"
    rt = np.array([d for d, _ in delays])
    rt_corr = float(np.median([c for _, c in delays]))
    mic_corr = windowed_match(mic[-2 * page_rate :], resample_chunk(sent, rate, page_rate), page_rate)
    print(
        f"\nchromium: connected in {float(query['connect_ms']):.0f} ms over {query['local']} <-> {query['remote']}"
        f" (ICE RTT {query['rtt']} s)\n"
        f"  WAV vs browser's own mic capture: median correlation {mic_corr:.3f} (250 ms windows)\n"
        f"  WAV vs audio voxline received (16 kHz frames): median correlation {in_corr:.3f}\n"
        f"  echo heard in browser vs its mic: median correlation {rt_corr:.3f} (250 ms windows),"
        f" round trip median {np.median(rt) * 1000:.0f} ms (min {rt.min() * 1000:.0f}, max {rt.max() * 1000:.0f})\n"
        f"  endpoint stats {json.dumps(ep.stats().as_dict())}"
    )
    assert in_corr > 0.8, "the audio voxline received does not match the WAV Chromium played"
    assert rt_corr > 0.7, "the echo Chromium heard does not match what it sent"
