"""VAD transforms on real recorded speech (Debian's pocketsphinx-testdata).

The expected speech regions are derived independently of any VAD, from each
recording's energy envelope: 10 ms frames, the noise floor and peak as the 10th
and 99th percentiles of frame energy in dB, speech where the energy is above
floor + 30% of that range in runs of at least 50 ms; the region spans the
first to the last such run. Recordings are joined with 1.5 s of digital
silence into a "conversation", so each must come out as one turn, in place.

Tolerances, and why: a detector starts at voicing while the energy rule also
catches a loud initial fricative ("four", "seven": ~0.15 s earlier), hence
0.25 s on starts; at the end a detector keeps the decaying tail and final
fricatives ("clubs") that fall under the energy rule, hence -0.25/+0.4 s on ends. The
turns are 2.5+ s apart, so this still pins each one to its recording.
"""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soxr

from voxline.media.clock import FakeClock
from voxline.media.endpoint import EndpointConfig
from voxline.media.frames import (
    Audio,
    Dtmf,
    EndOfStream,
    Frame,
    Interrupt,
    Mark,
    Payload,
    SpeechEnded,
    SpeechStarted,
    TextChunk,
    Transcript,
)
from voxline.media.pipeline import Pipeline
from voxline.media.silero import BatcherConfig, SileroBatcher, SileroModel
from voxline.media.vad import SileroVad, WebrtcVad

DATA = Path("/usr/share/pocketsphinx/test/data")
PCM = npt.NDArray[np.int16]
GAP = 1.5
START_TOL = 0.25
END_EARLY, END_LATE = 0.25, 0.4
# stop 0.5 s: longer than any pause inside these single utterances (the longest,
# in goforward.raw, is ~0.27 s by the same energy envelope), shorter than GAP.
TURNS = EndpointConfig(threshold=0.5, start=0.1, stop=0.5)

SILERO_SET = (
    "goforward.raw",
    "something.raw",
    "numbers.raw",
    "librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
    "cards/003.wav",
)
# numbers.raw is left out for webrtcvad: at 16 kHz, right after digital silence,
# its noise model flags the recording's 40 dB noise floor as speech for ~0.14 s
# until it adapts, and the hangover bridges that into the turn, starting it
# 0.5 s early (a known weakness of webrtcvad; Silero does not do it).
WEBRTC_SET = tuple(n for n in SILERO_SET if n != "numbers.raw")


def recording(name: str) -> PCM:
    path = DATA / name
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: these tests need real recorded speech from Debian's "
            "pocketsphinx-testdata (apt-get install pocketsphinx-testdata)"
        )
    if path.suffix == ".raw":
        return np.fromfile(path, dtype="<i2").astype(np.int16)
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def speech_region(pcm: PCM, rate: int = 16000) -> tuple[float, float]:
    hop = rate // 100
    n = len(pcm) // hop
    x = pcm[: n * hop].astype(np.float64).reshape(n, hop)
    db = 10 * np.log10(np.mean(x * x, axis=1) + 1.0)
    floor, peak = np.percentile(db, 10), np.percentile(db, 99)
    loud = (db > floor + 0.3 * (peak - floor)).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.r_[0, loud, 0]))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a >= 5]
    assert runs, "no speech in the reference recording"
    return runs[0][0] / 100, runs[-1][1] / 100


def conversation(names: Sequence[str], rate: int) -> tuple[PCM, list[tuple[float, float]]]:
    gap = np.zeros(int(GAP * rate), np.int16)
    parts: list[PCM] = [gap]
    expected: list[tuple[float, float]] = []
    t = GAP
    for name in names:
        x16 = recording(name)
        a, b = speech_region(x16)  # from the original, independent of resampling
        expected.append((t + a, t + b))
        x = x16 if rate == 16000 else soxr.resample(x16, 16000, rate).astype(np.int16)
        parts += [x, gap]
        t += len(x) / rate + GAP
    return np.concatenate(parts), expected


def frames_of(pcm: PCM, rate: int, sizes: Sequence[int]) -> list[Audio]:
    out: list[Audio] = []
    pos = 0
    k = 0
    while pos < len(pcm):
        n = sizes[k % len(sizes)]
        out.append(Audio(pcm[pos : pos + n], rate, pts=pos, arrival=pos / rate))
        pos += n
        k += 1
    return out


async def drain(batcher: SileroBatcher | None) -> None:
    if batcher is not None:
        while await batcher.run_once():
            pass


async def run(
    stage: WebrtcVad | SileroVad, frames: Sequence[Audio], batcher: SileroBatcher | None = None
) -> list[tuple[Audio | EndOfStream, list[Frame]]]:
    """Each input frame with what process() returned for it; the batcher runs between frames."""
    calls: list[tuple[Audio | EndOfStream, list[Frame]]] = []
    for f in frames:
        calls.append((f, list(stage.process(f))))
        await drain(batcher)
    eos = EndOfStream()
    calls.append((eos, list(stage.process(eos))))
    return calls


def events_of(calls: Sequence[tuple[object, list[Frame]]]) -> list[SpeechStarted | SpeechEnded]:
    return [f for _, out in calls for f in out if isinstance(f, (SpeechStarted, SpeechEnded))]


def key(events: Sequence[SpeechStarted | SpeechEnded]) -> list[tuple[str, int, int]]:
    """Events without their arrival times (which follow the frame that completes a window)."""
    return [(type(e).__name__, e.pts, e.turn) for e in events]


def segments(events: Sequence[SpeechStarted | SpeechEnded], rate: int) -> list[tuple[float, float]]:
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SpeechEnded] * (len(events) // 2), f"events do not pair: {events}"
    for i in range(0, len(events), 2):
        assert events[i].turn == events[i + 1].turn == i // 2 + 1
    return [(events[i].pts / rate, events[i + 1].pts / rate) for i in range(0, len(events), 2)]


def assert_turns_line_up(found: list[tuple[float, float]], expected: list[tuple[float, float]]) -> None:
    shown = f"found {[(round(a, 2), round(b, 2)) for a, b in found]}, expected {expected}"
    assert len(found) == len(expected), shown
    for (s, e), (a, b) in zip(found, expected):
        assert abs(s - a) <= START_TOL, shown
        assert -END_EARLY <= e - b <= END_LATE, shown


def assert_audio_forwarded(calls: Sequence[tuple[object, list[Frame]]]) -> None:
    """Every call returns its own frame, unchanged, last, and events only before it."""
    for frame, out in calls:
        assert out[-1] is frame
        assert all(isinstance(f, (SpeechStarted, SpeechEnded)) for f in out[:-1])


@pytest.fixture(scope="module")
def model() -> SileroModel:
    return SileroModel()


@pytest.fixture
async def batcher16(model: SileroModel) -> AsyncIterator[SileroBatcher]:
    b = SileroBatcher(model, 16000, clock=FakeClock())
    yield b
    await b.aclose()


@pytest.fixture
async def batcher8(model: SileroModel) -> AsyncIterator[SileroBatcher]:
    b = SileroBatcher(model, 8000, clock=FakeClock())
    yield b
    await b.aclose()


# -- real speech ---------------------------------------------------------------


@pytest.mark.parametrize("rate", [16000, 8000])
async def test_webrtc_turns_line_up_with_real_speech(rate: int) -> None:
    pcm, expected = conversation(WEBRTC_SET, rate)
    stage = WebrtcVad(rate, mode=3, config=TURNS)
    calls = await run(stage, frames_of(pcm, rate, [rate // 50]))
    assert_turns_line_up(segments(events_of(calls), rate), expected)
    assert_audio_forwarded(calls)
    assert stage.decisions == len(pcm) // stage.window


@pytest.mark.parametrize("rate", [16000, 8000])
async def test_silero_turns_line_up_with_real_speech(
    rate: int, batcher16: SileroBatcher, batcher8: SileroBatcher
) -> None:
    batcher = batcher16 if rate == 16000 else batcher8
    pcm, expected = conversation(SILERO_SET, rate)
    stage = SileroVad(batcher, TURNS)
    calls = await run(stage, frames_of(pcm, rate, [rate // 50]), batcher)
    assert_turns_line_up(segments(events_of(calls), rate), expected)
    assert_audio_forwarded(calls)
    assert stage.decisions == len(pcm) // stage.window == batcher.windows


async def test_silero_finds_speech_in_white_noise(batcher16: SileroBatcher) -> None:
    pcm, expected = conversation(SILERO_SET[:3], 16000)
    rng = np.random.default_rng(7)
    speech_rms = np.sqrt(np.mean(recording("goforward.raw").astype(np.float64) ** 2))
    noise = rng.standard_normal(len(pcm)) * speech_rms / 10 ** (10 / 20)  # 10 dB SNR
    noisy = np.clip(pcm + noise, -32768, 32767).astype(np.int16)
    stage = SileroVad(batcher16, TURNS)
    calls = await run(stage, frames_of(noisy, 16000, [320]), batcher16)
    assert_turns_line_up(segments(events_of(calls), 16000), expected)


async def test_webrtc_nothing_on_digital_silence() -> None:
    stage = WebrtcVad(16000, config=TURNS)
    calls = await run(stage, frames_of(np.zeros(16000 * 5, np.int16), 16000, [320]))
    assert events_of(calls) == []
    assert stage.decisions == 250 and stage.speech_windows == 0


@pytest.mark.parametrize("signal", ["silence", "white noise"])
async def test_silero_nothing_on_silence_or_noise(signal: str, batcher16: SileroBatcher) -> None:
    if signal == "silence":
        pcm = np.zeros(16000 * 5, np.int16)
    else:
        pcm = (np.random.default_rng(3).standard_normal(16000 * 5) * 3000).astype(np.int16)
    stage = SileroVad(batcher16, EndpointConfig(start=0.0, stop=0.1))  # onset at one window
    calls = await run(stage, frames_of(pcm, 16000, [320]), batcher16)
    assert events_of(calls) == []
    assert stage.decisions == len(pcm) // 512


# -- re-buffering ----------------------------------------------------------------

ODD_SIZES = [[160], [480], [123], [1000], [1, 7, 319, 641, 50, 2000, 3]]


@pytest.mark.parametrize("sizes", ODD_SIZES)
async def test_webrtc_any_frame_size_gives_same_decisions(sizes: list[int]) -> None:
    pcm, _ = conversation(WEBRTC_SET[:2], 16000)
    ref = events_of(await run(WebrtcVad(16000, config=TURNS), frames_of(pcm, 16000, [320])))
    stage = WebrtcVad(16000, config=TURNS)
    calls = await run(stage, frames_of(pcm, 16000, sizes))
    assert key(events_of(calls)) == key(ref) and len(ref) == 4
    assert_audio_forwarded(calls)
    assert stage.decisions == len(pcm) // 320


@pytest.mark.parametrize("frame_ms", [10, 30])
async def test_webrtc_window_sizes(frame_ms: int) -> None:
    pcm, expected = conversation(WEBRTC_SET[:2], 8000)
    stage = WebrtcVad(8000, frame_ms=frame_ms, config=TURNS)
    calls = await run(stage, frames_of(pcm, 8000, [160]))
    assert stage.window == 8 * frame_ms
    assert_turns_line_up(segments(events_of(calls), 8000), expected)


@pytest.mark.parametrize("sizes", ODD_SIZES)
async def test_silero_any_frame_size_gives_same_decisions(sizes: list[int], batcher16: SileroBatcher) -> None:
    pcm, _ = conversation(SILERO_SET[:2], 16000)
    ref = events_of(await run(SileroVad(batcher16, TURNS), frames_of(pcm, 16000, [320]), batcher16))
    stage = SileroVad(batcher16, TURNS)
    calls = await run(stage, frames_of(pcm, 16000, sizes), batcher16)
    assert key(events_of(calls)) == key(ref) and len(ref) == 4
    assert_audio_forwarded(calls)
    assert stage.decisions == len(pcm) // 512
    assert batcher16.dropped == 0


# -- the frame contract ------------------------------------------------------------


def test_webrtc_audio_unchanged_and_in_order() -> None:
    pcm, _ = conversation(WEBRTC_SET[:1], 16000)
    frames = frames_of(pcm, 16000, [320, 100, 540])
    copies = [f.pcm.copy() for f in frames]
    stage = WebrtcVad(16000, config=TURNS)
    audio = [f for fr in frames for f in stage.process(fr) if isinstance(f, Audio)]
    assert len(audio) == len(frames)
    for got, sent, copy in zip(audio, frames, copies):
        assert got is sent
        assert (got.pts, got.rate, got.turn) == (sent.pts, 16000, 0)
        np.testing.assert_array_equal(got.pcm, copy)


async def test_silero_audio_unchanged_and_in_order(batcher16: SileroBatcher) -> None:
    pcm, _ = conversation(SILERO_SET[:1], 16000)
    frames = frames_of(pcm, 16000, [320, 100, 540])
    copies = [f.pcm.copy() for f in frames]
    stage = SileroVad(batcher16, TURNS)
    audio: list[Frame] = []
    for fr in frames:
        audio += [f for f in stage.process(fr) if isinstance(f, Audio)]
        await drain(batcher16)
    assert len(audio) == len(frames)
    for got, sent, copy in zip(audio, frames, copies):
        assert got is sent and isinstance(got, Audio)
        np.testing.assert_array_equal(got.pcm, copy)


async def test_events_never_precede_the_audio_that_proves_them(batcher16: SileroBatcher) -> None:
    pcm, _ = conversation(SILERO_SET[:2], 16000)
    frames = frames_of(pcm, 16000, [320])
    config = EndpointConfig(start=0.1, stop=0.5)
    for stage, b in ((WebrtcVad(16000, config=config), None), (SileroVad(batcher16, config), batcher16)):
        calls = await run(stage, frames, b)
        seen = 0
        for frame, out in calls[:-1]:
            assert isinstance(frame, Audio)
            for ev in out[:-1]:
                assert isinstance(ev, (SpeechStarted, SpeechEnded))
                need = config.start if isinstance(ev, SpeechStarted) else config.stop
                assert ev.pts + round(need * 16000) <= frame.pts + frame.samples
                if b is not None:  # Silero: a result comes back with a *later* frame
                    assert ev.pts + round(need * 16000) <= frame.pts
                seen += 1
        assert seen == 4


async def test_silero_results_wait_for_next_process(batcher16: SileroBatcher) -> None:
    stage = SileroVad(batcher16, EndpointConfig(start=0.0, stop=0.1))
    speech = recording("something.raw")[8000:8000 + 512 * 4]  # inside the word
    out = stage.process(Audio(speech, 16000, 0))
    assert [type(f) for f in out] == [Audio]
    await drain(batcher16)
    assert stage.decisions == 0  # results sit in the slot's deque: nothing injected
    assert len(batcher16.results(stage.slot or 0)) == 4
    nxt = Audio(np.zeros(320, np.int16), 16000, len(speech))
    out = stage.process(nxt)
    assert [type(f) for f in out] == [SpeechStarted, Audio] and out[-1] is nxt
    assert stage.decisions == 4


@pytest.mark.parametrize(
    "frame",
    [
        Transcript("hi", final=True),
        TextChunk("hello"),
        Dtmf("5"),
        Mark("m"),
        Interrupt(),
        Payload(b"\xff" * 160, "PCMU", 8000),
        SpeechStarted(0, 16000),
    ],
)
async def test_other_frames_pass_untouched(frame: Frame, batcher16: SileroBatcher) -> None:
    for stage in (WebrtcVad(16000), SileroVad(batcher16)):
        out = stage.process(frame)
        assert len(out) == 1 and out[0] is frame
        assert stage.decisions == 0


async def test_end_of_stream_closes_open_turn(batcher16: SileroBatcher) -> None:
    pcm = recording("goforward.raw")[: int(1.5 * 16000)]  # cut mid-utterance
    for stage, b in ((WebrtcVad(16000, config=TURNS), None), (SileroVad(batcher16, TURNS), batcher16)):
        calls = await run(stage, frames_of(pcm, 16000, [320]), b)
        eos, out = calls[-1]
        assert [type(f) for f in out] == [SpeechEnded, EndOfStream] and out[-1] is eos
        ended = out[0]
        assert isinstance(ended, SpeechEnded) and ended.turn == 1
        assert 1.2 <= ended.pts / 16000 <= 1.5  # speech was still going at the cut
        assert segments(events_of(calls), 16000)


async def test_config_swap_and_declared_latency(batcher16: SileroBatcher) -> None:
    w = WebrtcVad(16000, frame_ms=30, config=EndpointConfig(start=0.2, stop=0.2))
    assert w.latency == pytest.approx(0.03 + 0.2) and w.onset_latency == pytest.approx(0.03 + 0.2)
    s = SileroVad(batcher16, EndpointConfig(start=0.1, stop=0.3))
    # window 32 ms + one tick (10 ms) + one frame until process() returns it + hangover
    assert s.latency == pytest.approx(0.032 + 0.01 + 0.02 + 0.3)
    assert s.onset_latency == pytest.approx(0.032 + 0.01 + 0.02 + 0.1)
    short = EndpointConfig(start=0.3, stop=0.1)  # e.g. while the bot speaks
    w.config = short
    s.config = short
    assert w.endpointer.config is short and s.endpointer.config is short
    assert w.latency == pytest.approx(0.03 + 0.1) and w.onset_latency == pytest.approx(0.03 + 0.3)
    assert s.latency == pytest.approx(0.032 + 0.01 + 0.02 + 0.1)
    assert not hasattr(w, "mark") and not hasattr(s, "mark")  # the agent records marks


async def test_config_swap_changes_turns_on_real_speech() -> None:
    # Two recordings 1.5 s apart: two turns with a 0.5 s hangover. A 2 s hangover
    # would not do, the silence between the two being ~2.5 s (1.5 s gap plus the
    # recordings' own lead-in and tail); 3 s, swapped in mid-turn, bridges it.
    pcm, expected = conversation(WEBRTC_SET[:2], 16000)
    frames = frames_of(pcm, 16000, [320])
    plain = WebrtcVad(16000, config=TURNS)
    assert len(segments(events_of(await run(plain, frames)), 16000)) == 2
    stage = WebrtcVad(16000, config=TURNS)
    swap_at = expected[0][0] + 0.5  # inside the first turn
    events: list[Frame] = []
    for f in frames:
        if f.pts == round(swap_at * 50) * 320:
            stage.config = EndpointConfig(start=0.1, stop=3.0)
        events += stage.process(f)[:-1]
    events += stage.process(EndOfStream())[:-1]
    found = segments(events, 16000)  # type: ignore[arg-type]
    assert len(found) == 1
    assert abs(found[0][0] - expected[0][0]) <= START_TOL
    assert -END_EARLY <= found[0][1] - expected[1][1] <= END_LATE


async def test_wrong_rate_and_bad_arguments(batcher16: SileroBatcher) -> None:
    with pytest.raises(ValueError, match="8000 Hz"):
        WebrtcVad(16000).process(Audio(np.zeros(160, np.int16), 8000))
    with pytest.raises(ValueError, match="8000 Hz"):
        SileroVad(batcher16).process(Audio(np.zeros(160, np.int16), 8000))
    with pytest.raises(ValueError, match="mode"):
        WebrtcVad(16000, mode=4)
    with pytest.raises(ValueError, match="10, 20 or 30"):
        WebrtcVad(16000, frame_ms=25)
    with pytest.raises(ValueError, match="webrtcvad runs at"):
        WebrtcVad(22050)


async def test_silero_close_releases_slot(batcher16: SileroBatcher) -> None:
    a, b = SileroVad(batcher16), SileroVad(batcher16)
    assert batcher16.active == 2
    slot_a = a.slot
    assert slot_a is not None
    a.close()
    a.close()  # idempotent
    assert batcher16.active == 1 and a.slot is None
    c = SileroVad(batcher16, EndpointConfig(start=0.0))
    assert c.slot == slot_a  # reused
    speech = recording("something.raw")[8000 : 8000 + 512 * 2]
    c.process(Audio(speech, 16000))
    await drain(batcher16)
    assert len(batcher16.results(slot_a)) == 2
    with pytest.raises(RuntimeError, match="after close"):
        a.process(Audio(np.zeros(320, np.int16), 16000))
    assert [type(f) for f in a.process(EndOfStream())] == [EndOfStream]
    assert len(batcher16.results(slot_a)) == 2  # the closed stage did not take c's results
    assert [type(f) for f in c.process(Audio(np.zeros(320, np.int16), 16000, 1024))] == [SpeechStarted, Audio]
    b.close()
    c.close()
    assert batcher16.active == 0


async def test_silero_in_a_pipeline_releases_slot_on_stop(batcher16: SileroBatcher) -> None:
    got: list[Frame] = []
    stage = SileroVad(batcher16, TURNS)
    pipe = Pipeline([stage], got.append, clock=FakeClock())
    assert dict(pipe.budget.stages)["vad"] == pytest.approx(stage.latency)
    await pipe.start()
    pcm, expected = conversation(SILERO_SET[:1], 16000)
    for f in frames_of(pcm, 16000, [320]):
        pipe.push(f)
        await drain(batcher16)
    pipe.push(EndOfStream())
    assert_turns_line_up(segments(events_of([(None, got)]), 16000), expected)
    assert sum(isinstance(f, Audio) for f in got) == len(pcm) // 320 + (len(pcm) % 320 > 0)
    await pipe.stop()
    assert batcher16.active == 0 and stage.slot is None
