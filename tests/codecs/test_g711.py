"""G.711 against CPython 3.11's audioop (the oracle, for tests only)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import cast

import numpy as np
import pytest

from voxline.codecs import MAX_PAYLOAD_BYTES, PCMA, PCMU, Codec, CodecError
from voxline.codecs import g711
from tests.codecs.signals import snr_db, tone

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # removed in 3.13; fine as an oracle
    import audioop

ALL_LINEAR = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))
ULAW_NEGATIVE_ZERO = 0x7F  # decodes to 0 like 0xFF, which is what 0 encodes to

LAWS = [
    pytest.param(PCMU, audioop.lin2ulaw, audioop.ulaw2lin, id="ulaw"),
    pytest.param(PCMA, audioop.lin2alaw, audioop.alaw2lin, id="alaw"),
]
Lin2Law = Callable[[bytes, int], bytes]
Law2Lin = Callable[[bytes, int], bytes]


@pytest.mark.parametrize(("codec", "lin2law", "law2lin"), LAWS)
def test_encode_is_bit_exact_with_audioop_for_every_linear_value(
    codec: Codec, lin2law: Lin2Law, law2lin: Law2Lin
) -> None:
    ours = np.frombuffer(codec.encoder().encode(ALL_LINEAR), np.uint8)
    oracle = np.frombuffer(lin2law(ALL_LINEAR.tobytes(), 2), np.uint8)
    mismatches = np.flatnonzero(ours != oracle)
    assert mismatches.size == 0, f"first mismatch at {ALL_LINEAR[mismatches[0]]}"


@pytest.mark.parametrize(("codec", "lin2law", "law2lin"), LAWS)
def test_decode_is_bit_exact_with_audioop_for_every_code(
    codec: Codec, lin2law: Lin2Law, law2lin: Law2Lin
) -> None:
    ours = codec.decoder().decode(ALL_CODES)
    oracle = np.frombuffer(law2lin(ALL_CODES, 2), np.int16)
    assert ours.dtype == np.int16
    np.testing.assert_array_equal(ours, oracle)


def test_alaw_code_round_trip_is_identity() -> None:
    assert PCMA.encoder().encode(PCMA.decoder().decode(ALL_CODES)) == ALL_CODES


def test_ulaw_code_round_trip_is_identity_except_negative_zero() -> None:
    back = PCMU.encoder().encode(PCMU.decoder().decode(ALL_CODES))
    differing = [code for code in range(256) if back[code] != code]
    assert differing == [ULAW_NEGATIVE_ZERO]
    assert back[ULAW_NEGATIVE_ZERO] == 0xFF


def test_alaw_round_trip_error_is_within_half_a_step() -> None:
    # Four mantissa bits under an implicit leading one: half a step is 1/32 of
    # the magnitude; segments 0 and 1 share the smallest step, 16.
    y = PCMA.decoder().decode(PCMA.encoder().encode(ALL_LINEAR))
    error = np.abs(y.astype(int) - ALL_LINEAR.astype(int))
    assert np.all(error <= np.maximum(np.abs(ALL_LINEAR.astype(int)) / 32, 8))


def test_ulaw_round_trip_error_is_within_half_a_step() -> None:
    # Same 1/32 rule on the biased magnitude (|x| + 132); the two low bits the
    # encoder drops move x by up to 3 first (and may cross into the next
    # segment). µ-law clips above 32124, so stay below that.
    x = ALL_LINEAR[np.abs(ALL_LINEAR.astype(int)) <= 32124]
    y = PCMU.decoder().decode(PCMU.encoder().encode(x))
    error = np.abs(y.astype(int) - x.astype(int))
    assert np.all(error <= (np.abs(x.astype(int)) + 3 + 132) / 32 + 3)


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=["ulaw", "alaw"])
def test_tone_round_trip_snr_is_that_of_g711(codec: Codec) -> None:
    x = tone(8000)
    y = codec.decoder().decode(codec.encoder().encode(x))
    assert len(y) == len(x)
    assert snr_db(x.astype(float), y.astype(float)) > 30  # G.711 is ~38 dB on a loud tone


def test_frame_sizes() -> None:
    assert PCMU.frame_bytes(20) == 160
    assert PCMA.frame_bytes(30) == 240
    assert PCMU.frame_samples(20) == 160
    assert len(PCMU.encoder().encode(np.zeros(PCMU.frame_samples(20), np.int16))) == 160


def test_codec_descriptions() -> None:
    assert (PCMU.name, PCMU.rate, PCMU.clock_rate, PCMU.channels, PCMU.static_pt) == (
        "PCMU", 8000, 8000, 1, 0,
    )
    assert (PCMA.name, PCMA.static_pt, PCMA.rtpmap) == ("PCMA", 8, "PCMA/8000")


def test_stateless_coders_are_shared() -> None:
    shared = cast(object, PCMU.encoder())
    assert shared is cast(object, PCMU.decoder())
    assert shared is cast(object, PCMU.encoder())
    assert cast(object, PCMA.encoder()) is not shared


def test_strided_and_empty_input() -> None:
    x = ALL_LINEAR[::7]
    assert PCMU.encoder().encode(x) == audioop.lin2ulaw(np.ascontiguousarray(x).tobytes(), 2)
    assert PCMU.encoder().encode(np.zeros(0, np.int16)) == b""
    assert PCMU.decoder().decode(b"").shape == (0,)


def test_decoded_array_is_writable_and_independent() -> None:
    payload = bytearray(b"\x00\x80")
    y = PCMA.decoder().decode(bytes(payload))
    y[0] = 1  # would raise on a read-only view
    assert PCMA.decoder().decode(bytes(payload))[0] != 1


@pytest.mark.parametrize(
    ("pcm", "message"),
    [
        (np.zeros(160, np.float64), "PCMU pcm dtype is float64, expected int16"),
        (np.zeros(160, ">i2"), "PCMU pcm dtype is >i2, expected int16"),
        (np.zeros((2, 80), np.int16), "PCMU pcm has 2 dimensions, expected 1"),
        ([0] * 160, "PCMU pcm is list, expected a numpy array"),
    ],
)
def test_bad_pcm_is_refused_with_exact_message(pcm: object, message: str) -> None:
    with pytest.raises(CodecError) as caught:
        PCMU.encoder().encode(pcm)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_oversized_payload_is_refused() -> None:
    with pytest.raises(CodecError) as caught:
        PCMA.decoder().decode(bytes(MAX_PAYLOAD_BYTES + 1))
    assert str(caught.value) == f"PCMA payload length {MAX_PAYLOAD_BYTES + 1} exceeds 65536"
    assert len(PCMA.decoder().decode(bytes(MAX_PAYLOAD_BYTES))) == MAX_PAYLOAD_BYTES


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


def test_module_functions_match_codecs() -> None:
    x = tone(8000)[:160]
    assert g711.ulaw_encode(x) == PCMU.encoder().encode(x)
    assert g711.alaw_encode(x) == PCMA.encoder().encode(x)
    np.testing.assert_array_equal(g711.ulaw_decode(ALL_CODES), PCMU.decoder().decode(ALL_CODES))
    np.testing.assert_array_equal(g711.alaw_decode(ALL_CODES), PCMA.decoder().decode(ALL_CODES))
