"""G.722 through av: round trips, codec delay, state, buffering, errors."""

from __future__ import annotations

import numpy as np
import pytest

from voxline.codecs import G722, MAX_PAYLOAD_BYTES, CodecError, G722Encoder
from tests.codecs.signals import (
    aligned, chirp, corr, load_speech, measure_delay, peak_hz, snr_db, tone,
)

FRAME = 320  # 20 ms at 16 kHz
FRAME_BYTES = 160  # 64 kbit/s
WARM_UP = 1600  # 100 ms: let the ADPCM predictors settle before judging quality
# Analysis and synthesis QMF banks of 24 taps each: about 23 samples together.
PLAUSIBLE_DELAY = range(8, 33)  # 0.5 .. 2 ms


def code_in_frames(x: np.ndarray, frame: int = FRAME) -> tuple[list[bytes], list[np.ndarray]]:
    encoder, decoder = G722.encoder(), G722.decoder()
    payloads = [encoder.encode(x[i : i + frame]) for i in range(0, len(x) - frame + 1, frame)]
    return payloads, [decoder.decode(p) for p in payloads]


@pytest.fixture(scope="module")
def delay() -> int:
    sweep = chirp(16000, f1=7000)
    _, decoded = code_in_frames(sweep)
    return measure_delay(sweep, np.concatenate(decoded), max_lag=FRAME)


def test_codec_delay_is_that_of_the_qmf_banks(delay: int) -> None:
    assert delay in PLAUSIBLE_DELAY


def test_description_has_the_8000_hz_clock_quirk() -> None:
    assert (G722.name, G722.rate, G722.clock_rate, G722.channels, G722.static_pt) == (
        "G722", 16000, 8000, 1, 9,
    )
    assert G722.rtpmap == "G722/8000"
    assert G722.frame_bytes(20) == FRAME_BYTES
    assert G722.frame_samples(20) == FRAME


def test_tone_round_trip(delay: int) -> None:
    x = tone(16000)
    payloads, decoded = code_in_frames(x)
    assert [len(p) for p in payloads] == [FRAME_BYTES] * (len(x) // FRAME)
    assert [len(d) for d in decoded] == [FRAME] * (len(x) // FRAME)
    y = np.concatenate(decoded)
    assert y.dtype == np.int16
    assert peak_hz(y, G722.rate) == pytest.approx(1000, abs=2)  # decoded at 16 kHz
    assert snr_db(*aligned(x, y, delay, WARM_UP)) > 30


def test_speech_round_trip(delay: int) -> None:
    x = load_speech(16000)
    _, decoded = code_in_frames(x)
    y = np.concatenate(decoded)
    assert len(y) == len(x) // FRAME * FRAME
    a, b = aligned(x, y, delay, WARM_UP)
    assert snr_db(a, b) > 15  # sub-band ADPCM keeps the waveform
    assert corr(a, b) > 0.98
    # The delay found on the sweep is also the best alignment for speech.
    assert measure_delay(x, y, max_lag=FRAME) == delay


def test_decoder_state_carries_across_frames(delay: int) -> None:
    x = chirp(16000, f1=7000)
    payloads, decoded = code_in_frames(x)
    continuous = snr_db(*aligned(x, np.concatenate(decoded), delay, WARM_UP))
    # A fresh decoder per frame restarts the ADPCM predictors from zero.
    restarted = np.concatenate([G722.decoder().decode(p) for p in payloads])
    assert continuous - snr_db(*aligned(x, restarted, delay, WARM_UP)) > 10


def test_encoder_state_carries_across_frames_and_streams_do_not_share_it() -> None:
    a, b = tone(16000, 0.2), chirp(16000, 0.2)
    alone_a, _ = code_in_frames(a)
    alone_b, _ = code_in_frames(b)
    enc_a, enc_b = G722.encoder(), G722.encoder()
    assert enc_a is not enc_b
    interleaved = [(enc_a.encode(a[i : i + FRAME]), enc_b.encode(b[i : i + FRAME]))
                   for i in range(0, len(a), FRAME)]
    assert [p for p, _ in interleaved] == alone_a
    assert [p for _, p in interleaved] == alone_b
    # ...and a fresh encoder per frame gives different bytes after the first frame.
    fresh = [G722.encoder().encode(a[i : i + FRAME]) for i in range(0, len(a), FRAME)]
    assert fresh[0] == alone_a[0]
    assert fresh[1:] != alone_a[1:]


@pytest.mark.parametrize("ms", [10, 20, 30, 40, 60])
def test_multiples_of_the_granule_encode_at_once(ms: int) -> None:
    encoder = G722.encoder()
    x = tone(16000, 0.5)
    n = G722.frame_samples(ms)
    for i in range(0, len(x) - n + 1, n):
        assert len(encoder.encode(x[i : i + n])) == G722.frame_bytes(ms)


def test_other_lengths_are_held_until_a_granule_completes() -> None:
    encoder = G722Encoder()  # granule 160 samples
    x = tone(16000, 0.1)
    assert encoder.encode(x[:100]) == b""
    assert encoder.pending_samples == 100
    assert len(encoder.encode(x[100:330])) == 160  # 330 given: two 160-sample granules
    assert encoder.pending_samples == 10
    assert encoder.encode(x[330:331]) == b""
    assert encoder.pending_samples == 11
    assert len(encoder.flush()) == 6  # the last 11 samples, rounded up to whole bytes
    assert encoder.pending_samples == 0
    assert encoder.flush() == b""
    with pytest.raises(CodecError) as caught:
        encoder.encode(x[:160])
    assert str(caught.value) == "G722 encoder was flushed; start a new one"


def test_held_samples_come_out_the_same_as_whole_frames() -> None:
    x = chirp(16000, 0.2)
    whole, _ = code_in_frames(x)
    encoder = G722Encoder()
    uneven = b"".join(encoder.encode(x[i : i + 77]) for i in range(0, len(x), 77))
    assert uneven + encoder.flush() == b"".join(whole)


def test_granule_can_be_chosen() -> None:
    encoder = G722Encoder(granule=320)
    assert encoder.encode(tone(16000)[:160]) == b""
    with pytest.raises(CodecError) as caught:
        G722Encoder(granule=161)
    assert str(caught.value) == "G722 granule 161 is not a positive even sample count"


def test_any_bytes_decode_to_two_samples_each() -> None:
    decoder = G722.decoder()
    rng = np.random.default_rng(7)
    for size in (1, 7, 160, 1000):
        assert len(decoder.decode(rng.bytes(size))) == 2 * size
    assert decoder.decode(b"").shape == (0,)
    assert len(decoder.decode(bytes(FRAME_BYTES))) == FRAME  # still decoding after the empty one


def test_bad_input_is_refused() -> None:
    with pytest.raises(CodecError) as caught:
        G722.decoder().decode(bytes(MAX_PAYLOAD_BYTES + 1))
    assert str(caught.value) == f"G722 payload length {MAX_PAYLOAD_BYTES + 1} exceeds 65536"
    with pytest.raises(CodecError) as caught:
        G722.encoder().encode(np.zeros(FRAME, np.float32))
    assert str(caught.value) == "G722 pcm dtype is float32, expected int16"
    with pytest.raises(CodecError) as caught:
        G722.encoder().encode(np.zeros((1, FRAME), np.int16))
    assert str(caught.value) == "G722 pcm has 2 dimensions, expected 1"
