import av
import numpy as np
import pytest
import soxr

from voxline.media.frames import Audio, EndOfStream, TextChunk
from voxline.media.resample import Resample, StreamResampler, resample_chunk


def speechlike(rate: int, seconds: float = 1.0, seed: int = 1) -> np.ndarray:
    """Band-limited noise below 3.4 kHz with a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spec[(freqs < 100) | (freqs > 3400)] = 0
    x = np.fft.irfft(spec, n)
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * 4 * np.arange(n) / rate)
    return (x / np.abs(x).max() * 12000).astype(np.int16)


def frames_of(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def one_shot_swr(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    r = av.AudioResampler(format="s16", layout="mono", rate=dst)
    f = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="s16", layout="mono")
    f.sample_rate = src
    out = [o.to_ndarray().reshape(-1) for o in r.resample(f) + r.resample(None)]
    return np.concatenate(out)


@pytest.mark.parametrize("src,dst", [(8000, 16000), (16000, 8000), (48000, 16000), (16000, 48000)])
def test_hq_stream_matches_one_shot_conversion(src: int, dst: int) -> None:
    x = speechlike(src)
    rs = StreamResampler(src, dst, "hq")
    streamed = np.concatenate([rs.process(f) for f in frames_of(x, src // 50)] + [rs.flush()])
    whole = one_shot_swr(x, src, dst)
    assert len(streamed) == len(whole)
    assert np.max(np.abs(streamed.astype(int) - whole.astype(int))) <= 1


@pytest.mark.parametrize("src,dst", [(8000, 16000), (16000, 8000)])
def test_fast_stream_matches_one_shot_conversion(src: int, dst: int) -> None:
    x = speechlike(src)
    rs = StreamResampler(src, dst, "fast")
    streamed = np.concatenate([rs.process(f) for f in frames_of(x, src // 50)] + [rs.flush()])
    whole = soxr.resample(x, src, dst, quality="QQ")
    assert len(streamed) == len(whole)
    # Rounding to int16 at chunk edges differs by at most 2 LSB; misaligned or
    # discontinuous output would differ by thousands.
    assert np.max(np.abs(streamed.astype(int) - whole.astype(int))) <= 2


@pytest.mark.parametrize("quality", ["hq", "fast"])
def test_output_is_smooth_frame_by_frame(quality: str) -> None:
    rs = StreamResampler(8000, 16000, quality)  # type: ignore[arg-type]
    sizes = [len(rs.process(f)) for f in frames_of(speechlike(8000), 160)]
    assert all(s > 0 for s in sizes)  # never a silent frame followed by a burst
    assert max(sizes[2:]) == min(sizes[2:]) == 320


@pytest.mark.parametrize("quality", ["hq", "fast"])
def test_output_is_index_aligned_and_declared_delay_is_the_holdback(quality: str) -> None:
    rs = StreamResampler(8000, 16000, quality)  # type: ignore[arg-type]
    x = np.zeros(1600, dtype=np.int16)
    x[400] = 20000
    outs = [rs.process(f) for f in frames_of(x, 160)]
    y = np.concatenate(outs + [rs.flush()])
    assert int(np.argmax(np.abs(y))) == 800  # sample indices (and so pts) stay aligned
    # The latency added is the lookahead held back from each frame until the next.
    holdback = (320 - len(outs[0])) / 16000
    assert holdback > 0
    assert abs(holdback - rs.delay) <= 1 / 16000


def tone_level(y: np.ndarray, rate: int, f: float) -> float:
    w = np.hanning(len(y))
    spec = np.abs(np.fft.rfft(y.astype(float) * w))
    k = int(round(f * len(y) / rate))
    return float(spec[max(k - 3, 0) : k + 4].max())


def test_hq_rejects_aliases_and_fast_does_not() -> None:
    t = np.arange(16000) / 16000
    six_k = (8000 * np.sin(2 * np.pi * 6000 * t)).astype(np.int16)  # aliases to 2 kHz at 8 kHz
    two_k = (8000 * np.sin(2 * np.pi * 2000 * t)).astype(np.int16)
    levels = {}
    for q in ("hq", "fast"):
        alias = np.concatenate([StreamResampler(16000, 8000, q).process(six_k)])  # type: ignore[arg-type]
        ref = StreamResampler(16000, 8000, q).process(two_k)  # type: ignore[arg-type]
        levels[q] = 20 * np.log10(tone_level(alias, 8000, 2000) / tone_level(ref, 8000, 2000))
    assert levels["hq"] < -60
    assert levels["fast"] > -10  # why "fast" is only for band-limited input


def test_stage_rescales_pts_keeps_turn_and_flushes_at_end() -> None:
    stage = Resample(8000, 16000, "hq")
    outs = []
    for i, f in enumerate(frames_of(speechlike(8000, 0.2), 160)):
        outs.extend(stage.process(Audio(f, 8000, 160 * i + 800, arrival=1.5, turn=3)))
    tail = stage.process(EndOfStream())
    assert type(tail[-1]) is EndOfStream and type(tail[0]) is Audio
    audio = [o for o in outs + list(tail[:-1]) if type(o) is Audio]
    assert audio[0].pts == 1600
    for a, b in zip(audio, audio[1:]):
        assert b.pts == a.pts + len(a.pcm)  # contiguous
    assert sum(len(a.pcm) for a in audio) == 2 * 1600
    assert all(a.rate == 16000 and a.turn == 3 for a in audio)


def test_stage_passes_other_frames_and_refuses_wrong_rates() -> None:
    stage = Resample(8000, 16000)
    chunk = TextChunk("x")
    assert stage.process(chunk) == (chunk,)
    already = Audio(np.zeros(320, np.int16), 16000)
    assert stage.process(already) == (already,)
    with pytest.raises(ValueError, match="takes 8000 Hz audio, got 44100 Hz"):
        stage.process(Audio(np.zeros(10, np.int16), 44100))


def test_interrupt_resets_history() -> None:
    stage = Resample(16000, 8000, "hq")
    stage.process(Audio(speechlike(16000, 0.02), 16000))
    stage.interrupt()
    out = stage.process(Audio(np.zeros(320, np.int16), 16000, pts=32000))
    assert type(out[0]) is Audio and not np.any(out[0].pcm)  # no tail of the old audio
    assert out[0].pts == 16000


def test_chunk_resampling_and_bad_arguments() -> None:
    x = speechlike(22050, 0.5)
    y = resample_chunk(x, 22050, 8000)
    assert y.dtype == np.int16 and abs(len(y) - 4000) <= 1
    assert resample_chunk(x, 8000, 8000) is x
    with pytest.raises(ValueError, match="quality must be"):
        StreamResampler(8000, 16000, "best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be positive"):
        StreamResampler(0, 16000)
