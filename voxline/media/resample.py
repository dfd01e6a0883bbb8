"""Streaming resampling, one stateful resampler per stream and direction.

Measured on 20 ms frames (see ``benchmarks/resample.py``, figures in the README):

=========  ==========  ============  ===========  ===========  ==============
backend    per frame   burstiness    image rej.   alias rej.   delay
=========  ==========  ============  ===========  ===========  ==============
soxr QQ    ~3 us       smooth        -11 dB       none (0 dB)  ~0.25 ms
soxr HQ    ~3 us       0,0,0,0,1660  -110 dB      -82 dB       burst of 100 ms
swr        ~10 us      smooth        -100 dB      -78 dB       ~2 ms
=========  ==========  ============  ===========  ===========  ==============

soxr's HQ/MQ/LQ filters return nothing for several frames and then a burst, which
is unusable for paced audio. So a stream offers two qualities:

- ``"hq"`` (default): libswresample through PyAV: smooth, properly band-limited.
  Use it wherever real content above the target's Nyquist frequency can exist
  (a browser's 48 kHz microphone to 16 kHz, wideband to narrowband).
- ``"fast"``: soxr ``QQ`` (cubic interpolation): smooth and three times cheaper,
  but with no anti-aliasing filter. Acceptable only where the input is already
  band-limited below the output's Nyquist frequency, e.g. narrowband telephony
  up to 16 kHz and back, which is what the W2 benchmark's media path does.

Whole chunks that are not paced (a TTS sentence) go through ``resample_chunk``:
soxr HQ in one call, bit-identical to streaming and without burst concerns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import av
import numpy as np
import numpy.typing as npt
import soxr

from .frames import Audio, EndOfStream, Frame

__all__ = ["Resample", "StreamResampler", "resample_chunk", "Quality"]

Quality = Literal["hq", "fast"]
PCM = npt.NDArray[np.int16]
_EMPTY = np.zeros(0, dtype=np.int16)

# Delay each backend adds, in seconds, as measured with an impulse (tests check it).
SWR_DELAY = 0.002
SOXR_QQ_DELAY = 0.00025


def resample_chunk(pcm: PCM, src: int, dst: int) -> PCM:
    """Resample a whole chunk at soxr HQ (not for paced frame-by-frame use)."""
    if src == dst:
        return pcm
    out = soxr.resample(pcm, src, dst, quality="HQ")
    return np.asarray(out, dtype=np.int16)


class StreamResampler:
    """A stateful mono int16 resampler fed frame by frame."""

    __slots__ = ("src", "dst", "quality", "_soxr", "_swr", "process")

    def __init__(self, src: int, dst: int, quality: Quality = "hq") -> None:
        if src <= 0 or dst <= 0:
            raise ValueError(f"sample rates must be positive, got {src} -> {dst}")
        if quality not in ("hq", "fast"):
            raise ValueError(f"resample quality must be 'hq' or 'fast', got {quality!r}")
        self.src = src
        self.dst = dst
        self.quality = quality
        self._soxr: soxr.ResampleStream | None = None
        self._swr: av.AudioResampler | None = None
        self.reset()

    @property
    def delay(self) -> float:
        return SWR_DELAY if self.quality == "hq" else SOXR_QQ_DELAY

    def reset(self) -> None:
        """Forget buffered history (after an interruption: that audio is gone)."""
        self.process: Callable[[PCM], PCM]
        if self.quality == "fast":
            self._soxr = soxr.ResampleStream(self.src, self.dst, 1, dtype="int16", quality="QQ")
            # soxr's own method, bound: no Python frame of ours per audio frame
            self.process = self._soxr.resample_chunk
        else:
            self._swr = av.AudioResampler(format="s16", layout="mono", rate=self.dst)
            self.process = self._process_swr

    def _process_swr(self, pcm: PCM) -> PCM:
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.src
        return self._collect(self._swr.resample(frame))  # type: ignore[union-attr]

    def flush(self) -> PCM:
        """Return what the resampler still holds at the end of a stream."""
        if self._soxr is not None:
            return self._soxr.resample_chunk(_EMPTY, last=True)  # type: ignore[no-any-return]
        return self._collect(self._swr.resample(None))  # type: ignore[union-attr]

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> PCM:
        if not frames:
            return _EMPTY
        if len(frames) == 1:
            return np.asarray(frames[0].to_ndarray().reshape(-1), dtype=np.int16)
        return np.concatenate([np.asarray(f.to_ndarray().reshape(-1), dtype=np.int16) for f in frames])


class Resample:
    """Transform: Audio at ``src`` Hz in, Audio at ``dst`` Hz out (pts rescaled).

    Audio already at ``dst`` passes untouched; audio at any other rate is a
    pipeline built wrong and raises.
    """

    def __init__(self, src: int, dst: int, quality: Quality = "hq", name: str | None = None) -> None:
        self.name = name or f"resample_{src}_{dst}"
        self.src = src
        self.dst = dst
        self._rs = StreamResampler(src, dst, quality)
        self.latency = self._rs.delay
        self._pts: int | None = None  # next output pts, counted in output samples
        self._last: Audio | None = None  # for the timing of what a flush returns

    def process(self, frame: Frame) -> Sequence[Frame]:
        if type(frame) is Audio:
            if frame.rate != self.src:
                if frame.rate == self.dst:
                    return (frame,)
                raise ValueError(f"{self.name} takes {self.src} Hz audio, got {frame.rate} Hz")
            pts = self._pts
            if pts is None:
                pts = frame.pts * self.dst // self.src
            out = self._rs.process(frame.pcm)
            n = len(out)
            if not n:
                self._pts = pts
                return ()
            self._pts = pts + n
            self._last = frame
            return (Audio(out, self.dst, pts, frame.arrival, frame.turn),)
        if type(frame) is EndOfStream:
            tail = self._rs.flush()
            last = self._last
            if len(tail) and self._pts is not None and last is not None:
                audio = Audio(tail, self.dst, self._pts, last.arrival, last.turn)
                self._pts += len(tail)
                return (audio, frame)
        return (frame,)

    def interrupt(self) -> None:
        self._rs.reset()
        self._pts = None
