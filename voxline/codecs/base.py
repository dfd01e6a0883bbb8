"""The codec contract: a codec description, its encoder/decoder shapes, one error.

Everything here is pure: no I/O, no event loop. PCM is always a 1-D native int16
numpy array of mono samples at ``Codec.rate``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Codec",
    "CodecError",
    "Concealer",
    "Decoder",
    "Encoder",
    "Pcm",
    "check_payload",
    "check_pcm",
]

# Bigger than any UDP datagram (65,507) and than 1 s of 16 kHz L16 (32,000):
# bounds the work one untrusted payload can cause without refusing real traffic.
MAX_PAYLOAD_BYTES = 65_536

_INT16 = np.dtype(np.int16)

Pcm = npt.NDArray[np.int16]


class CodecError(ValueError):
    """Bad input to an encoder or decoder, or an unknown codec."""


class Encoder(Protocol):
    def encode(self, pcm: Pcm) -> bytes:
        """Encode 1-D int16 mono samples at the codec's ``rate``."""
        ...


class Decoder(Protocol):
    def decode(self, payload: bytes) -> Pcm:
        """Decode one payload into 1-D int16 mono samples at the codec's ``rate``."""
        ...


@runtime_checkable
class Concealer(Protocol):
    """A decoder that can stand in for a lost packet (``isinstance`` works)."""

    def conceal(self) -> Pcm:
        """Audio for one lost packet, extrapolated from the stream so far."""
        ...


@dataclass(frozen=True, slots=True)
class Codec:
    """What SDP and RTP need to know about a codec, and how to get a coder.

    ``make_encoder``/``make_decoder`` return a shared object for stateless codecs
    and a fresh one for stateful ones (one per stream): call ``encoder()`` /
    ``decoder()`` once per stream and never share the result between streams.
    Equality compares the wire description only, not the coders' settings.
    """

    name: str  # SDP encoding name, as it is conventionally spelled ("PCMU", "opus")
    rate: int  # sample rate of the PCM taken and produced
    clock_rate: int  # RTP clock rate (G.722: 8000 for 16 kHz audio, RFC 3551)
    channels: int  # SDP channel count (opus: always 2, RFC 7587)
    static_pt: int | None  # RFC 3551 static payload type, None if dynamic
    # Bits on the wire per PCM sample for constant-rate codecs, None otherwise.
    bits_per_sample: int | None
    make_encoder: Callable[[], Encoder] = field(repr=False, compare=False)
    make_decoder: Callable[[], Decoder] = field(repr=False, compare=False)
    fmtp: tuple[tuple[str, str], ...] = ()  # default SDP a=fmtp parameters

    def encoder(self) -> Encoder:
        return self.make_encoder()

    def decoder(self) -> Decoder:
        return self.make_decoder()

    @property
    def rtpmap(self) -> str:
        """The a=rtpmap value after the payload type, e.g. "G722/8000"."""
        if self.channels == 1:
            return f"{self.name}/{self.clock_rate}"
        return f"{self.name}/{self.clock_rate}/{self.channels}"

    @property
    def fmtp_line(self) -> str:
        """The a=fmtp value after the payload type, e.g. "minptime=10;useinbandfec=0"."""
        return ";".join(f"{key}={value}" for key, value in self.fmtp)

    def frame_samples(self, ms: int) -> int:
        """PCM samples in ``ms`` milliseconds at ``rate``."""
        samples, remainder = divmod(self.rate * ms, 1000)
        if ms <= 0 or remainder:
            raise CodecError(f"{self.name} has no whole frame of {ms} ms at {self.rate} Hz")
        return samples

    def frame_bytes(self, ms: int) -> int:
        """Payload bytes for ``ms`` milliseconds (G.711: 8 per ms; L16: 2*rate/1000)."""
        if self.bits_per_sample is None:
            raise CodecError(f"{self.name} has a variable frame size")
        size, remainder = divmod(self.frame_samples(ms) * self.bits_per_sample, 8)
        if remainder:
            raise CodecError(f"{self.name} frame of {ms} ms is not a whole number of bytes")
        return size


def check_pcm(pcm: Pcm, codec: str) -> None:
    """Reject what would be silently misread: another dtype, byte order or shape."""
    if not isinstance(pcm, np.ndarray):
        raise CodecError(f"{codec} pcm is {type(pcm).__name__}, expected a numpy array")
    if pcm.dtype != _INT16:
        raise CodecError(f"{codec} pcm dtype is {pcm.dtype}, expected int16")
    if pcm.ndim != 1:
        raise CodecError(f"{codec} pcm has {pcm.ndim} dimensions, expected 1")


def check_payload(payload: bytes, codec: str) -> None:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CodecError(
            f"{codec} payload length {len(payload)} exceeds {MAX_PAYLOAD_BYTES}"
        )
