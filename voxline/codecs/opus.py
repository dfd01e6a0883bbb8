"""Opus (RFC 6716, RTP per RFC 7587) through PyAV's libopus, for mono voice.

- SDP always says "opus/48000/2" and the RTP clock is always 48 kHz, whatever
  the audio's bandwidth or channel count (RFC 7587 section 7).
- The encoder takes mono PCM at ``OpusConfig.rate``; libopus accepts 8, 12, 16,
  24 and 48 kHz natively, so 16 kHz needs no resampling on the way out.
- av's libopus decoder always produces 48 kHz (libavcodec forces it whatever
  the context asks for). For any other ``rate`` the decoder resamples with
  libswresample, whose start-up delay would make the first frame short (304 of
  320 samples at 16 kHz); we left-pad that first frame with zeros, so every
  packet decodes to exactly its duration and the delay is constant.
- The decoder is mono: stereo packets are down-mixed by libopus.
- One encode() call is exactly one frame (``frame_ms``) and yields one packet:
  concatenated Opus packets would not be a valid payload.
- Packet-loss concealment is reachable: a packet whose frames have zero length
  makes libopus run its PLC (RFC 6716 section 3.2.1), so ``conceal()`` feeds one
  with the last packet's TOC. In-band FEC is not: libavcodec never asks libopus
  to decode the FEC copy in the next packet, so the fmtp says useinbandfec=0.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, partial
from typing import Literal, cast

import av
import numpy as np
from av.audio.codeccontext import AudioCodecContext
from av.audio.resampler import AudioResampler

from voxline.codecs.base import Codec, CodecError, Pcm, check_payload, check_pcm

__all__ = ["OPUS", "OPUS_FMTP", "OpusConfig", "OpusDecoder", "OpusEncoder", "opus"]

NAME = "opus"
CLOCK_RATE = 48_000  # RFC 7587 section 4.1
SDP_CHANNELS = 2  # RFC 7587 section 7: "opus/48000/2" even for mono
DECODE_RATE = 48_000  # what av's libopus decoder always outputs
ENCODER_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)  # native libopus rates
FRAME_MS = (10, 20, 40, 60)  # whole-ms libopus frame durations (>= minptime)
MIN_BITRATE = 6_000  # libopus range
MAX_BITRATE = 510_000
# Defaults for our a=fmtp. useinbandfec=0: we could not use the FEC (see above),
# so asking the peer to spend bits on it would waste them.
OPUS_FMTP = (("minptime", "10"), ("useinbandfec", "0"))

# TOC byte (RFC 6716 section 3.1): config(5) | stereo(1) | frame count code(2).
TOC_CODE_MASK = 0x03
CODE_TWO_FRAMES_VBR = 2  # a length byte follows the TOC
CODE_ARBITRARY = 3  # a frame count byte follows: VBR(1) | padding(1) | count(6)
FRAME_COUNT_MASK = 0x3F

Application = Literal["voip", "audio", "lowdelay"]


@dataclass(frozen=True, slots=True)
class OpusConfig:
    rate: int = 48_000  # PCM rate in and out
    bitrate: int = 32_000
    frame_ms: int = 20
    application: Application = "voip"
    fec: bool = False  # send in-band FEC (when the peer's fmtp says useinbandfec=1)
    packet_loss_pct: int = 0  # libopus spends bits on FEC only when this is > 0

    def __post_init__(self) -> None:
        if self.rate not in ENCODER_RATES:
            raise CodecError(f"opus rate {self.rate} is not one of {ENCODER_RATES}")
        if not MIN_BITRATE <= self.bitrate <= MAX_BITRATE:
            raise CodecError(f"opus bitrate {self.bitrate} is outside {MIN_BITRATE}..{MAX_BITRATE}")
        if self.frame_ms not in FRAME_MS:
            raise CodecError(f"opus frame_ms {self.frame_ms} is not one of {FRAME_MS}")
        if not 0 <= self.packet_loss_pct <= 100:
            raise CodecError(f"opus packet_loss_pct {self.packet_loss_pct} is outside 0..100")

    @property
    def frame_samples(self) -> int:
        return self.rate * self.frame_ms // 1000


class OpusEncoder:
    """One stream's Opus encoder: one ``frame_ms`` frame in, one packet out."""

    __slots__ = ("_ctx", "_frame_ms", "_frame_samples", "_rate")

    def __init__(self, config: OpusConfig = OpusConfig()) -> None:
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = config.rate
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.bit_rate = config.bitrate
        ctx.options = {
            "application": config.application,
            "frame_duration": str(config.frame_ms),
            "fec": "1" if config.fec else "0",
            "packet_loss": str(config.packet_loss_pct),
        }
        ctx.open()
        self._ctx: AudioCodecContext = ctx
        self._rate = config.rate
        self._frame_ms = config.frame_ms
        self._frame_samples = config.frame_samples

    def encode(self, pcm: Pcm) -> bytes:
        check_pcm(pcm, NAME)
        if len(pcm) != self._frame_samples:
            raise CodecError(
                f"opus pcm length {len(pcm)} is not one {self._frame_ms} ms frame"
                f" ({self._frame_samples} samples at {self._rate} Hz)"
            )
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._rate
        # libopus has no look-ahead buffering in av: a full frame yields its packet.
        (packet,) = self._ctx.encode(frame)
        return bytes(packet)


class OpusDecoder:
    """One stream's Opus decoder, producing mono int16 at ``rate``."""

    __slots__ = ("_ctx", "_frame_samples", "_last_head", "_padded", "_rate", "_resampler")

    def __init__(self, rate: int = DECODE_RATE, frame_ms: int = 20) -> None:
        if rate not in ENCODER_RATES:
            raise CodecError(f"opus rate {rate} is not one of {ENCODER_RATES}")
        if frame_ms not in FRAME_MS:
            raise CodecError(f"opus frame_ms {frame_ms} is not one of {FRAME_MS}")
        ctx = av.CodecContext.create("libopus", "r")
        ctx.sample_rate = DECODE_RATE
        ctx.layout = "mono"
        ctx.open()
        self._ctx: AudioCodecContext = ctx
        self._rate = rate
        self._frame_samples = rate * frame_ms // 1000  # conceal() before any packet
        self._resampler = (
            None if rate == DECODE_RATE
            else AudioResampler(format="s16", layout="mono", rate=rate)
        )
        self._padded = rate == DECODE_RATE  # nothing to pad without a resampler
        self._last_head = b""  # TOC (and count byte) of the last good packet

    def decode(self, payload: bytes) -> Pcm:
        check_payload(payload, NAME)
        if not payload:
            raise CodecError("opus payload is empty")  # RFC 6716 section 3.4 [R1]
        try:
            frames = self._ctx.decode(av.Packet(payload))
        except av.FFmpegError as exc:
            raise CodecError(
                f"opus payload is invalid ({len(payload)} bytes, TOC 0x{payload[0]:02x})"
            ) from exc
        self._last_head = payload[:2]
        return self._to_pcm(frames)

    def conceal(self) -> Pcm:
        """Audio for one lost packet, as long as the last packet (libopus PLC).

        Before any packet has arrived there is nothing to extrapolate: silence.
        """
        if not self._last_head:
            return np.zeros(self._frame_samples, np.int16)
        frames = self._ctx.decode(av.Packet(_plc_packet(self._last_head)))
        return self._to_pcm(frames)

    def _to_pcm(self, frames: list[av.AudioFrame]) -> Pcm:
        decoded = sum(frame.samples for frame in frames)
        if self._resampler is not None:
            frames = [out for frame in frames for out in self._resampler.resample(frame)]
        pcm: Pcm
        if len(frames) == 1:  # the usual case: skip the concatenate copy
            pcm = cast(Pcm, frames[0].to_ndarray()).reshape(-1)
        else:
            pcm = np.concatenate(
                [cast(Pcm, frame.to_ndarray()).reshape(-1) for frame in frames]
                or [np.zeros(0, np.int16)]
            )
        if not self._padded:
            # Turn libswresample's start-up delay into a constant delay (see module doc).
            self._padded = True
            short = decoded * self._rate // DECODE_RATE - len(pcm)
            if short > 0:
                pcm = np.concatenate([np.zeros(short, np.int16), pcm])
        return pcm


def _plc_packet(head: bytes) -> bytes:
    """A packet with the last packet's frame layout but every frame zero bytes long.

    libopus decodes a zero-length frame by concealment (RFC 6716 section 3.2.1).
    Code 0 and 1 need only the TOC; code 2 needs a zero first-frame length; code 3
    keeps the frame count with the VBR and padding flags cleared (CBR, 0 bytes).
    """
    toc = head[0]
    code = toc & TOC_CODE_MASK
    if code == CODE_TWO_FRAMES_VBR:
        return bytes((toc, 0))
    if code == CODE_ARBITRARY:
        return bytes((toc, head[1] & FRAME_COUNT_MASK))
    return bytes((toc,))


def opus(config: OpusConfig = OpusConfig()) -> Codec:
    """The Opus codec description for ``config`` (one shared object per config)."""
    return _opus(config)


@cache  # behind opus() so that opus() and opus(OpusConfig()) share one cache key
def _opus(config: OpusConfig) -> Codec:
    return Codec(
        name=NAME, rate=config.rate, clock_rate=CLOCK_RATE, channels=SDP_CHANNELS,
        static_pt=None, bits_per_sample=None,
        make_encoder=partial(OpusEncoder, config),
        make_decoder=partial(OpusDecoder, config.rate, config.frame_ms),
        fmtp=OPUS_FMTP,
    )


OPUS = opus()
