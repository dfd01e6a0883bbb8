from __future__ import annotations

import pytest

from voxline.codecs import G722, KNOWN, OPUS, PCMA, PCMU, CodecError, by_static_pt, l16, lookup


@pytest.mark.parametrize("name", ["PCMU", "pcmu", "Pcmu"])
def test_names_are_case_insensitive(name: str) -> None:
    assert lookup(name, 8000) is PCMU


def test_fixed_rate_codecs() -> None:
    assert lookup("PCMA", 8000, 1) is PCMA
    assert lookup("OPUS", 48000, 2) is OPUS
    assert lookup("opus", 48000, 2).rate == 48000


def test_g722_is_found_at_its_8000_hz_clock_and_is_16_khz_audio() -> None:
    codec = lookup("g722", 8000)
    assert codec is G722
    assert (codec.rate, codec.clock_rate) == (16000, 8000)
    with pytest.raises(CodecError) as caught:
        lookup("G722", 16000)
    assert str(caught.value) == "no codec G722/16000/1 (known: G722/8000)"


def test_opus_is_always_two_channels_in_sdp() -> None:
    with pytest.raises(CodecError) as caught:
        lookup("opus", 48000)
    assert str(caught.value) == "no codec opus/48000/1 (known: opus/48000/2)"


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
def test_l16_at_any_rate_is_big_endian(rate: int) -> None:
    codec = lookup("l16", rate)
    assert codec is l16(rate)
    assert (codec.name, codec.rate, codec.clock_rate) == ("L16", rate, rate)


def test_l16_refusals() -> None:
    with pytest.raises(CodecError) as caught:
        lookup("L16", 44100, 2)
    assert str(caught.value) == "no codec L16/44100/2"  # stereo is not supported
    with pytest.raises(CodecError) as caught:
        lookup("L16", 0)
    assert str(caught.value) == "L16 rate 0 is outside 1..192000"
    with pytest.raises(CodecError) as caught:
        lookup("L16LE", 8000)  # not an SDP name
    assert str(caught.value) == "no codec L16LE/8000/1"


def test_unknown_codec_names_what_was_asked() -> None:
    with pytest.raises(CodecError) as caught:
        lookup("G729", 8000)
    assert str(caught.value) == "no codec G729/8000/1"
    with pytest.raises(CodecError) as caught:
        lookup("PCMU", 16000)
    assert str(caught.value) == "no codec PCMU/16000/1 (known: PCMU/8000)"


@pytest.mark.parametrize(
    ("pt", "expected"), [(0, PCMU), (8, PCMA), (9, G722), (11, l16(44100))]
)
def test_static_payload_types(pt: int, expected: object) -> None:
    assert by_static_pt(pt) is expected


@pytest.mark.parametrize("pt", [3, 10, 18, 96, 111])
def test_unknown_static_payload_type(pt: int) -> None:
    with pytest.raises(CodecError) as caught:
        by_static_pt(pt)
    assert str(caught.value) == f"no codec for static payload type {pt}"


def test_every_known_codec_is_found_by_its_own_rtpmap() -> None:
    for codec in KNOWN:
        name, clock, *channels = codec.rtpmap.split("/")
        assert lookup(name, int(clock), int(channels[0]) if channels else 1) is codec
        if codec.static_pt is not None:
            assert by_static_pt(codec.static_pt) is codec
