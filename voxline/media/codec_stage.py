"""Codec transforms: ``Payload`` frames to ``Audio`` and back.

A payload that does not decode is counted and dropped: one malformed packet from
the network must never end a call. Audio at the wrong rate for the encoder is a
pipeline built wrong, and raises.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

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
    """Transform: ``Audio`` at the codec's rate -> ``Payload``.

    Codecs with a variable bit rate (Opus) take whole frames only, while a
    resampler's first output is short by its look-ahead: for those, audio is
    re-framed into ``frame_ms`` frames and the remainder carried to the next call.
    Constant-rate codecs (G.711, L16, G.722) encode whatever length they get.
    """

    def __init__(
        self, codec: Codec, name: str | None = None, latency: float = 0.0, frame_ms: int = 20
    ) -> None:
        self.name = name or f"encode_{codec.name.lower()}"
        self.codec = codec
        self._encoder = codec.encoder()
        self._encode = self._encoder.encode
        self._frame = codec.frame_samples(frame_ms) if codec.bits_per_sample is None else 0
        # A carried remainder waits up to one frame for the rest of its frame.
        self.latency = latency + (frame_ms / 1000 if self._frame else 0.0)
        self._carry = np.zeros(0, dtype=np.int16)
        self._carry_pts = 0

    def process(self, frame: Frame) -> Sequence[Frame]:
        if type(frame) is not Audio:
            return (frame,)
        if frame.rate != self.codec.rate:
            raise ValueError(f"{self.name} takes {self.codec.rate} Hz audio, got {frame.rate} Hz")
        if not self._frame:
            data = self._encode(frame.pcm)
            return (Payload(data, self.codec.name, frame.rate, frame.pts, frame.arrival, frame.turn),)
        pcm = frame.pcm
        pts = frame.pts
        if len(self._carry):
            pcm = np.concatenate((self._carry, pcm))
            pts = self._carry_pts
        n = self._frame
        whole = len(pcm) // n
        out = [
            Payload(self._encode(pcm[i * n : (i + 1) * n]), self.codec.name, frame.rate,
                    pts + i * n, frame.arrival, frame.turn)
            for i in range(whole)
        ]
        self._carry = pcm[whole * n :]
        self._carry_pts = pts + whole * n
        return out

    def interrupt(self) -> None:
        self._carry = np.zeros(0, dtype=np.int16)
