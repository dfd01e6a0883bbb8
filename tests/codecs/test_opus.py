"""Opus through av's libopus: round trips at 48 and 16 kHz, delay, state, PLC, errors."""

from __future__ import annotations

from collections.abc import Callable

import av
import numpy as np
import pytest

from voxline.codecs import (
    OPUS, Codec, CodecError, Concealer, OpusConfig, OpusDecoder, opus,
)
from tests.codecs.signals import (
    aligned, chirp, corr, envelope_corr, load_speech, measure_delay, peak_hz, rms, tone,
)

OPUS16 = opus(OpusConfig(rate=16000))
CODECS = [pytest.param(OPUS, id="48k"), pytest.param(OPUS16, id="16k")]
# Opus's algorithmic delay is 2.5 ms of overlap plus up to 4 ms of look-ahead,
# and resampling the 48 kHz decoder output adds a little: allow 2.5 .. 10 ms.
PLAUSIBLE_DELAY_MS = (2.5, 10.0)
WARM_UP_MS = 100
TOC_CODE = 0x03  # frame count code: the TOC's two low bits


def frame_of(codec: Codec) -> int:
    return codec.frame_samples(20)


def code_in_frames(codec: Codec, x: np.ndarray) -> tuple[list[bytes], list[np.ndarray]]:
    encoder, decoder = codec.encoder(), codec.decoder()
    n = frame_of(codec)
    payloads = [encoder.encode(x[i : i + n]) for i in range(0, len(x) - n + 1, n)]
    return payloads, [decoder.decode(p) for p in payloads]


def delay_of(codec: Codec) -> int:
    sweep = chirp(codec.rate)
    _, decoded = code_in_frames(codec, sweep)
    return measure_delay(sweep, np.concatenate(decoded), max_lag=frame_of(codec))


@pytest.fixture(scope="module")
def delays() -> dict[int, int]:
    return {codec.rate: delay_of(codec) for codec in (OPUS, OPUS16)}


def warm_up(codec: Codec) -> int:
    return codec.rate * WARM_UP_MS // 1000


@pytest.mark.parametrize("codec", CODECS)
def test_codec_delay_is_plausible(codec: Codec, delays: dict[int, int]) -> None:
    low, high = (ms * codec.rate / 1000 for ms in PLAUSIBLE_DELAY_MS)
    assert low <= delays[codec.rate] <= high


def test_descriptions() -> None:
    for codec in (OPUS, OPUS16):
        assert (codec.name, codec.clock_rate, codec.channels, codec.static_pt) == (
            "opus", 48000, 2, None,
        )
        assert codec.rtpmap == "opus/48000/2"
        assert codec.fmtp_line == "minptime=10;useinbandfec=0"
    assert (OPUS.rate, OPUS16.rate) == (48000, 16000)
    assert opus() is OPUS
    assert opus(OpusConfig()) is OPUS
    assert opus(OpusConfig(rate=16000)) is OPUS16
    with pytest.raises(CodecError) as caught:
        OPUS.frame_bytes(20)
    assert str(caught.value) == "opus has a variable frame size"


@pytest.mark.parametrize("codec", CODECS)
def test_tone_round_trip(codec: Codec, delays: dict[int, int]) -> None:
    x = tone(codec.rate)
    n = frame_of(codec)
    payloads, decoded = code_in_frames(codec, x)
    assert all(0 < len(p) < 200 for p in payloads)  # 32 kbit/s is ~80 bytes per 20 ms
    assert [len(d) for d in decoded] == [n] * (len(x) // n)  # the first frame too
    y = np.concatenate(decoded)
    assert y.dtype == np.int16
    assert peak_hz(y, codec.rate) == pytest.approx(1000, abs=2)  # decoded at codec.rate
    assert corr(*aligned(x, y, delays[codec.rate], warm_up(codec))) > 0.9


@pytest.mark.parametrize("codec", CODECS)
def test_speech_round_trip(codec: Codec, delays: dict[int, int]) -> None:
    x = load_speech(codec.rate)
    n = frame_of(codec)
    _, decoded = code_in_frames(codec, x)
    y = np.concatenate(decoded)
    assert len(y) == len(x) // n * n
    a, b = aligned(x, y, delays[codec.rate], warm_up(codec))
    # Opus is perceptual: at 32 kbit/s it keeps the envelope closely and the
    # waveform loosely (a wrong rate, order or alignment gives ~0 for both).
    assert envelope_corr(a, b, window=n // 2) > 0.85
    assert corr(a, b) > 0.6


@pytest.mark.parametrize("codec", CODECS)
def test_decoder_state_carries_across_frames(codec: Codec, delays: dict[int, int]) -> None:
    x = chirp(codec.rate)
    payloads, decoded = code_in_frames(codec, x)
    continuous = corr(*aligned(x, np.concatenate(decoded), delays[codec.rate], warm_up(codec)))
    restarted = np.concatenate([codec.decoder().decode(p) for p in payloads])
    assert continuous - corr(*aligned(x, restarted, delays[codec.rate], warm_up(codec))) > 0.2


@pytest.mark.parametrize("codec", CODECS)
def test_encoder_state_carries_and_streams_do_not_share_it(codec: Codec) -> None:
    n = frame_of(codec)
    a, b = tone(codec.rate, 0.2), chirp(codec.rate, 0.2)
    alone_a, _ = code_in_frames(codec, a)
    alone_b, _ = code_in_frames(codec, b)
    enc_a, enc_b = codec.encoder(), codec.encoder()
    interleaved = [(enc_a.encode(a[i : i + n]), enc_b.encode(b[i : i + n]))
                   for i in range(0, len(a), n)]
    assert [p for p, _ in interleaved] == alone_a
    assert [p for _, p in interleaved] == alone_b
    fresh = [codec.encoder().encode(a[i : i + n]) for i in range(0, len(a), n)]
    assert fresh[1:] != alone_a[1:]


@pytest.mark.parametrize("frame_ms", [10, 40, 60])
def test_other_frame_durations(frame_ms: int) -> None:
    codec = opus(OpusConfig(rate=16000, frame_ms=frame_ms))
    encoder, decoder = codec.encoder(), codec.decoder()
    n = codec.frame_samples(frame_ms)
    x = tone(16000)
    lengths = [len(decoder.decode(encoder.encode(x[i : i + n])))
               for i in range(0, len(x) - n + 1, n)]
    assert lengths == [n] * len(lengths)


def test_encode_takes_exactly_one_frame() -> None:
    with pytest.raises(CodecError) as caught:
        OPUS.encoder().encode(np.zeros(961, np.int16))
    assert str(caught.value) == (
        "opus pcm length 961 is not one 20 ms frame (960 samples at 48000 Hz)"
    )
    with pytest.raises(CodecError) as caught:
        OPUS16.encoder().encode(np.zeros(320, np.uint16))
    assert str(caught.value) == "opus pcm dtype is uint16, expected int16"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff\xff\xff\xff", "opus payload is invalid (4 bytes, TOC 0xff)"),  # 63 frames > 120 ms
        (b"\x03\x00", "opus payload is invalid (2 bytes, TOC 0x03)"),  # code 3 with no frames
        (b"", "opus payload is empty"),
    ],
)
def test_corrupt_packets_raise_and_the_decoder_survives(payload: bytes, message: str) -> None:
    encoder, decoder = OPUS.encoder(), OPUS.decoder()
    x = tone(48000, 0.1)
    decoder.decode(encoder.encode(x[:960]))
    with pytest.raises(CodecError) as caught:
        decoder.decode(payload)
    assert str(caught.value) == message
    assert len(decoder.decode(encoder.encode(x[960:1920]))) == 960


def test_oversized_payload_is_refused() -> None:
    with pytest.raises(CodecError) as caught:
        OPUS.decoder().decode(bytes(65537))
    assert str(caught.value) == "opus payload length 65537 exceeds 65536"


@pytest.mark.parametrize(
    ("config", "frames_sent"),
    [
        (OpusConfig(), 10),
        (OpusConfig(rate=16000), 10),
        (OpusConfig(rate=16000, frame_ms=60), 5),
        (OpusConfig(frame_ms=40), 5),
    ],
)
def test_conceal_extrapolates_the_last_packet(config: OpusConfig, frames_sent: int) -> None:
    codec = opus(config)
    encoder, decoder = codec.encoder(), codec.decoder()
    assert isinstance(decoder, Concealer)
    n = config.frame_samples
    x = tone(config.rate)
    last = [decoder.decode(encoder.encode(x[i * n : (i + 1) * n])) for i in range(frames_sent)][-1]
    concealed = decoder.conceal()
    assert len(concealed) == n
    assert rms(concealed) > 0.3 * rms(last)  # PLC continues the tone rather than going silent
    assert peak_hz(concealed, config.rate) == pytest.approx(1000, rel=0.1)
    # ...and fades over repeated losses, as libopus's PLC does.
    for _ in range(4):
        faded = decoder.conceal()
    assert rms(faded) < rms(concealed)
    assert len(decoder.decode(encoder.encode(x[:n]))) == n  # recovers on the next packet


def _code0_frames(count: int) -> tuple[list[bytes], int, list[bytes]]:
    """Leading 20 ms packets, then the TOC and bodies of ``count`` more that share it."""
    encoder = OPUS.encoder()
    x = tone(48000, 0.4)
    packets = [encoder.encode(x[i : i + 960]) for i in range(0, len(x), 960)]
    tail = packets[-count:]
    toc = tail[0][0]
    assert toc & TOC_CODE == 0 and all(p[0] == toc for p in tail)
    assert all(len(p) - 1 < 252 for p in tail)  # one-byte frame lengths below
    return packets[:-count], toc, [p[1:] for p in tail]


# Repacketised multi-frame packets (RFC 6716 sections 3.2.3-3.2.5), built by hand
# so that each frame-count code's concealment path is certainly taken.
def _code1(toc: int, frames: list[bytes]) -> bytes:  # two frames of equal size
    return bytes((toc | 1,)) + frames[0] + frames[0]


def _code2(toc: int, frames: list[bytes]) -> bytes:  # two frames, first length given
    return bytes((toc | 2, len(frames[0]))) + frames[0] + frames[1]


def _code3_cbr(toc: int, frames: list[bytes]) -> bytes:  # M equal frames
    return bytes((toc | 3, 3)) + frames[0] * 3


def _code3_vbr(toc: int, frames: list[bytes]) -> bytes:  # M frames, M-1 lengths given
    lengths = bytes(len(f) for f in frames[:-1])
    return bytes((toc | 3, 0x80 | len(frames))) + lengths + b"".join(frames)


@pytest.mark.parametrize(
    ("build", "frames"),
    [(_code1, 2), (_code2, 2), (_code3_cbr, 3), (_code3_vbr, 3)],
    ids=["code1", "code2", "code3-cbr", "code3-vbr"],
)
def test_conceal_after_multi_frame_packets(
    build: Callable[[int, list[bytes]], bytes], frames: int
) -> None:
    decoder = OPUS.decoder()
    assert isinstance(decoder, OpusDecoder)
    leading, toc, bodies = _code0_frames(frames)
    for packet in leading:
        decoder.decode(packet)
    assert len(decoder.decode(build(toc, bodies))) == 960 * frames
    concealed = decoder.conceal()
    assert len(concealed) == 960 * frames  # every frame of the lost packet is concealed
    assert rms(concealed[:960]) > 0.3 * rms(tone(48000, 0.02))


def test_conceal_before_any_packet_is_silence() -> None:
    decoder = OpusDecoder(rate=16000, frame_ms=20)
    concealed = decoder.conceal()
    assert not isinstance(OPUS16.encoder(), Concealer)
    assert concealed.shape == (320,)
    assert not concealed.any()


def test_stereo_packets_decode_to_mono() -> None:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format, ctx.bit_rate = 48000, "stereo", "s16", 64000
    ctx.open()
    left = tone(48000, 0.02)
    frame = av.AudioFrame.from_ndarray(
        np.stack([left, left]).T.reshape(1, -1).copy(), format="s16", layout="stereo"
    )
    frame.sample_rate = 48000
    (packet,) = ctx.encode(frame)
    payload = bytes(packet)
    assert payload[0] & 0x04  # TOC stereo flag: this really is a stereo packet
    assert OPUS.decoder().decode(payload).shape == (960,)
    assert OPUS16.decoder().decode(payload).shape == (320,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 44100}, "opus rate 44100 is not one of (8000, 12000, 16000, 24000, 48000)"),
        ({"bitrate": 1000}, "opus bitrate 1000 is outside 6000..510000"),
        ({"frame_ms": 30}, "opus frame_ms 30 is not one of (10, 20, 40, 60)"),
        ({"packet_loss_pct": 101}, "opus packet_loss_pct 101 is outside 0..100"),
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(CodecError) as caught:
        OpusConfig(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_bitrate_and_fec_reach_the_encoder() -> None:
    x = load_speech(48000)[:48000]

    def mean_size(config: OpusConfig) -> float:
        payloads, _ = code_in_frames(opus(config), x)
        return float(np.mean([len(p) for p in payloads]))

    low, high = mean_size(OpusConfig(bitrate=12000)), mean_size(OpusConfig(bitrate=64000))
    assert high > 3 * low
    # FEC changes what libopus puts in the packets (the LBRR copy of the last
    # frame); the expected loss alone also changes them, so hold it fixed.
    plain, _ = code_in_frames(opus(OpusConfig(bitrate=24000, packet_loss_pct=20)), x)
    with_fec, _ = code_in_frames(opus(OpusConfig(bitrate=24000, fec=True, packet_loss_pct=20)), x)
    assert with_fec != plain

