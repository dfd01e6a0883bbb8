import numpy as np
import pytest

from voxline.codecs import OPUS, PCMU
from voxline.media.codec_stage import Decode, Encode
from voxline.media.frames import Audio, Mark, Payload
from voxline.media.pipeline import Pipeline, PipelineState


async def test_malformed_payload_is_counted_and_dropped_and_the_call_goes_on() -> None:
    out: list[object] = []
    dec = Decode(OPUS)
    pipe = Pipeline([dec], out.append)
    await pipe.start()
    good = Encode(OPUS).process(Audio(np.zeros(960, np.int16), 48000))[0]
    assert isinstance(good, Payload)
    pipe.push(Payload(b"\xff\xff\xff\xff", "opus", 48000))  # TOC says nothing valid
    pipe.push(good)
    assert dec.errors == 1
    assert pipe.state is PipelineState.RUNNING
    assert [type(f) for f in out] == [Audio]
    await pipe.stop()


def test_g711_encode_decode_keep_timing_and_turn() -> None:
    pcm = (np.sin(np.arange(160) / 5) * 8000).astype(np.int16)
    (p,) = Encode(PCMU).process(Audio(pcm, 8000, pts=480, arrival=2.5, turn=4))
    assert isinstance(p, Payload) and len(p.data) == 160 and (p.pts, p.arrival, p.turn) == (480, 2.5, 4)
    (a,) = Decode(PCMU).process(p)
    assert isinstance(a, Audio) and a.rate == 8000 and a.pts == 480
    assert np.max(np.abs(a.pcm.astype(int) - pcm)) < 300  # µ-law quantisation


def test_fixed_frame_codec_is_reframed_across_uneven_input() -> None:
    enc = Encode(OPUS)
    sizes = [864, 960, 960, 1056]  # a resampler's short first frame, then catching up
    payloads = []
    pts = 0
    for n in sizes:
        payloads += enc.process(Audio(np.zeros(n, np.int16), 48000, pts))
        pts += n
    assert [p.pts for p in payloads] == [0, 960, 1920, 2880]  # type: ignore[union-attr]
    assert sum(sizes) - 4 * 960 == 0
    assert enc.latency == pytest.approx(0.02)
    assert enc.process(Mark("m")) == (Mark("m"),)


def test_wrong_rate_is_a_pipeline_built_wrong() -> None:
    with pytest.raises(ValueError, match="takes 8000 Hz audio, got 16000 Hz"):
        Encode(PCMU).process(Audio(np.zeros(320, np.int16), 16000))
