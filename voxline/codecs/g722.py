"""G.722 (64 kbit/s sub-band ADPCM) through PyAV/libavcodec.

16 kHz audio on an 8000 Hz RTP clock: RFC 3551 section 4.5.2 keeps the clock
rate of the original (erroneous) registration, so timestamps advance 160 per
20 ms while 320 samples go in and 160 bytes come out.

The ADPCM predictors carry state from one frame to the next, so every stream
gets its own encoder and decoder, kept open for the stream's life.

Encoder buffering: libavcodec's G.722 encoder has a fixed frame size and PyAV
re-chunks whatever it is given to that size in a FIFO. We set the frame size to
a *granule* (default 160 samples = 10 ms), so a call with a multiple of the
granule (10, 20, 30, 40 ms...) returns exactly ``len(pcm) // 2`` bytes at once.
Other lengths return the bytes of every complete granule so far and hold the
rest (``pending_samples``) until a later call or ``flush()``. A smaller granule
would make more lengths exact, but costs one libavcodec packet per granule
(measured on an idle 2-core machine, per 20 ms: granule 320 -> 19 µs,
160 -> 22 µs, 80 -> 29 µs, 2 -> 480 µs).
"""

from __future__ import annotations

from typing import cast

import av
import numpy as np
from av.audio.codeccontext import AudioCodecContext

from voxline.codecs.base import Codec, CodecError, Pcm, check_payload, check_pcm

__all__ = ["G722", "G722Decoder", "G722Encoder"]

NAME = "G722"
RATE = 16_000
CLOCK_RATE = 8_000  # RFC 3551 section 4.5.2
BIT_RATE = 64_000  # the only mode RTP uses: 8 bits per codeword
BITS_PER_SAMPLE = 4  # 64 kbit/s over 16,000 samples/s
PT_G722 = 9
DEFAULT_GRANULE = 160  # 10 ms
SAMPLES_PER_BYTE = 2  # one byte holds a low-band and a high-band code for two samples


class G722Encoder:
    """One stream's G.722 encoder (stateful: never share between streams)."""

    __slots__ = ("_ctx", "_flushed", "_granule", "_pending")

    def __init__(self, granule: int = DEFAULT_GRANULE) -> None:
        if granule <= 0 or granule % SAMPLES_PER_BYTE:
            raise CodecError(f"G722 granule {granule} is not a positive even sample count")
        ctx = av.CodecContext.create("g722", "w")
        ctx.sample_rate = RATE
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.bit_rate = BIT_RATE
        ctx.options = {"frame_size": str(granule)}
        ctx.open()
        self._ctx: AudioCodecContext = ctx
        self._granule = granule
        self._pending = 0
        self._flushed = False

    @property
    def pending_samples(self) -> int:
        """Samples given but not yet encoded (less than one granule)."""
        return self._pending

    def encode(self, pcm: Pcm) -> bytes:
        check_pcm(pcm, NAME)
        if self._flushed:
            raise CodecError("G722 encoder was flushed; start a new one")
        if not len(pcm):
            return b""
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        packets = self._ctx.encode(frame)
        self._pending = (self._pending + len(pcm)) % self._granule
        return b"".join([bytes(packet) for packet in packets])

    def flush(self) -> bytes:
        """Encode the held samples (end of stream): the encoder is done after this."""
        if self._flushed:
            return b""
        self._flushed = True
        self._pending = 0
        return b"".join([bytes(packet) for packet in self._ctx.encode(None)])


class G722Decoder:
    """One stream's G.722 decoder. Every byte string is valid G.722 (two samples a byte)."""

    __slots__ = ("_ctx",)

    def __init__(self) -> None:
        self._ctx: AudioCodecContext = av.CodecContext.create("g722", "r")
        self._ctx.open()

    def decode(self, payload: bytes) -> Pcm:
        check_payload(payload, NAME)
        if not payload:
            # An empty packet means "drain" to libavcodec and would end the stream.
            return np.zeros(0, np.int16)
        frames = self._ctx.decode(av.Packet(payload))
        if len(frames) == 1:  # what libavcodec does: one frame per packet
            return cast(Pcm, frames[0].to_ndarray()).reshape(-1)
        return np.concatenate([cast(Pcm, frame.to_ndarray()).reshape(-1) for frame in frames])


G722 = Codec(
    name=NAME, rate=RATE, clock_rate=CLOCK_RATE, channels=1, static_pt=PT_G722,
    bits_per_sample=BITS_PER_SAMPLE, make_encoder=G722Encoder, make_decoder=G722Decoder,
)
