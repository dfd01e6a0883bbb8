"""Codec transforms: ``Payload`` frames to ``Audio`` and back.

A payload that does not decode is counted and dropped: one malformed packet from
the network must never end a call. Audio at the wrong rate for the encoder is a
pipeline built wrong, and raises.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from voxline.codecs import Codec, CodecError

from .frames import Audio, Frame, Payload

__all__ = ["Decode", "Encode"]

log = logging.getLogger(__name__)


class Decode:
    """Transform: ``Payload`` in the codec's name -> ``Audio`` at the codec's rate."""

    def __init__(self, codec: Codec, name: str | None = None, latency: float = 0.0) -> None:
        self.name = name or f"decode_{codec.name.lower()}"
        self.codec = codec
        self.latency = latency
        self._decoder = codec.decoder()
        self._decode = self._decoder.decode
        self.errors = 0

    def process(self, frame: Frame) -> Sequence[Frame]:
        if type(frame) is not Payload:
            return (frame,)
        try:
            pcm = self._decode(frame.data)
        except CodecError as exc:
            self.errors += 1
            if self.errors <= 10 or self.errors % 1000 == 0:
                log.warning("x %s: dropped payload (%d so far): %s", self.name, self.errors, exc)
            return ()
        return (Audio(pcm, self.codec.rate, frame.pts, frame.arrival, frame.turn),)


class Encode:
    """Transform: ``Audio`` at the codec's rate -> ``Payload``."""

    def __init__(self, codec: Codec, name: str | None = None, latency: float = 0.0) -> None:
        self.name = name or f"encode_{codec.name.lower()}"
        self.codec = codec
        self.latency = latency
        self._encoder = codec.encoder()
        self._encode = self._encoder.encode

    def process(self, frame: Frame) -> Sequence[Frame]:
        if type(frame) is not Audio:
            return (frame,)
        if frame.rate != self.codec.rate:
            raise ValueError(f"{self.name} takes {self.codec.rate} Hz audio, got {frame.rate} Hz")
        data = self._encode(frame.pcm)
        return (Payload(data, self.codec.name, frame.rate, frame.pts, frame.arrival, frame.turn),)
