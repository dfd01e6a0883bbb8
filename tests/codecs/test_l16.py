from __future__ import annotations

import numpy as np
import pytest

from voxline.codecs import CodecError, l16

ALL_LINEAR = np.arange(-32768, 32768, dtype=np.int16)
SAMPLES = np.array([1, -2, 0x1234, -32768, 32767], np.int16)
BIG = b"\x00\x01\xff\xfe\x12\x34\x80\x00\x7f\xff"
LITTLE = b"\x01\x00\xfe\xff\x34\x12\x00\x80\xff\x7f"


def test_big_endian_is_network_order() -> None:
    codec = l16(16000)
    assert codec.encoder().encode(SAMPLES) == BIG
    np.testing.assert_array_equal(codec.decoder().decode(BIG), SAMPLES)


def test_little_endian() -> None:
    codec = l16(8000, little_endian=True)
    assert codec.encoder().encode(SAMPLES) == LITTLE
    np.testing.assert_array_equal(codec.decoder().decode(LITTLE), SAMPLES)


@pytest.mark.parametrize("little_endian", [False, True])
def test_round_trip_of_every_value(little_endian: bool) -> None:
    codec = l16(48000, little_endian=little_endian)
    encoder, decoder = codec.encoder(), codec.decoder()
    for half in np.split(ALL_LINEAR, 2):  # two payloads: one would exceed the size limit
        payload = encoder.encode(half)
        assert len(payload) == 2 * len(half)
        decoded = decoder.decode(payload)
        assert decoded.dtype == np.dtype(np.int16)  # native order, whatever the wire order
        np.testing.assert_array_equal(decoded, half)


def test_decoded_array_is_writable() -> None:
    decoded = l16(16000, little_endian=True).decoder().decode(LITTLE)
    decoded[0] = 7  # a plain frombuffer view of bytes would be read-only
    assert decoded[0] == 7


@pytest.mark.parametrize(("little_endian", "name"), [(False, "L16"), (True, "L16LE")])
def test_odd_payload_is_refused(little_endian: bool, name: str) -> None:
    with pytest.raises(CodecError) as caught:
        l16(16000, little_endian=little_endian).decoder().decode(bytes(161))
    assert str(caught.value) == f"{name} payload length 161 is not a multiple of 2"


def test_empty() -> None:
    codec = l16(16000)
    assert codec.encoder().encode(np.zeros(0, np.int16)) == b""
    assert codec.decoder().decode(b"").shape == (0,)


def test_bad_pcm_is_refused() -> None:
    with pytest.raises(CodecError) as caught:
        l16(16000).encoder().encode(np.zeros(4, np.int32))
    assert str(caught.value) == "L16 pcm dtype is int32, expected int16"


def test_descriptions_and_frame_sizes() -> None:
    codec = l16(16000)
    assert (codec.name, codec.rate, codec.clock_rate, codec.channels) == ("L16", 16000, 16000, 1)
    assert codec.rtpmap == "L16/16000"
    assert codec.static_pt is None
    assert l16(44100).static_pt == 11  # RFC 3551: L16/44100/1
    assert l16(44100, little_endian=True).static_pt is None
    assert l16(8000).frame_bytes(20) == 320  # 2 * rate / 1000 bytes per ms
    assert l16(16000).frame_bytes(20) == 640
    assert l16(48000, little_endian=True).frame_bytes(10) == 960
    assert l16(16000) is l16(rate=16000, little_endian=False)  # one shared description


def test_frame_size_without_whole_samples_is_refused() -> None:
    with pytest.raises(CodecError) as caught:
        l16(22050).frame_bytes(1)
    assert str(caught.value) == "L16 has no whole frame of 1 ms at 22050 Hz"
    assert l16(22050).frame_bytes(20) == 882


@pytest.mark.parametrize("rate", [0, -8000, 192_001])
def test_impossible_rate_is_refused(rate: int) -> None:
    with pytest.raises(CodecError) as caught:
        l16(rate)
    assert str(caught.value) == f"L16 rate {rate} is outside 1..192000"
