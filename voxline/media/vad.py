"""VAD transforms: audio passes straight through; speech events are added beside it.

Both stages take ``Audio`` at the rate they were built for, in frames of any
size (re-buffered into the detector's windows), and return the frame itself,
unchanged and at once: the media path never waits on voice detection. The
endpointer's ``SpeechStarted``/``SpeechEnded`` frames are returned *before* the
audio frame they come with. Other frames pass through untouched; on
``EndOfStream`` a turn still open is closed (``SpeechEnded``) before it.

- ``WebrtcVad``: webrtcvad (GMM, ~2-3 us per window), decided inline.
- ``SileroVad``: per-call state only; inference is done by a shared
  ``SileroBatcher`` across every call of the process. Results arrive from the
  batcher's tick, so the events they produce are returned on the stage's next
  ``process()`` call (never injected from a callback).

Latency. The audio itself is delayed by nothing. What a VAD adds to
voice-to-voice is the time from where the caller's speech ended to the
``SpeechEnded`` that lets the turn proceed: the window that holds the end of
speech must be complete, then the ``stop`` hangover must pass (plus, for
Silero, up to one batcher tick and one frame until the next ``process()``
returns the event). That is what ``latency`` declares. ``onset_latency`` is the
same for ``SpeechStarted`` with ``start``: it bounds barge-in reaction, not
voice-to-voice. Both are recomputed when the config is swapped.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence

import numpy as np
import webrtcvad

from .endpoint import EndpointConfig, Endpointer
from .feedback import Endpointing
from .frames import Audio, EndOfStream, Frame
from .silero import SileroBatcher

__all__ = ["WebrtcVad", "SileroVad"]

log = logging.getLogger(__name__)

_SCALE = np.float32(1.0 / 32768.0)
WEBRTC_RATES = (8000, 16000, 32000, 48000)


class _Endpointed:
    """What both VAD stages share: an endpointer whose config can be swapped at
    run time (per agent state), and the latency that config implies."""

    endpointer: Endpointer
    latency: float
    onset_latency: float
    listens = (Endpointing,)  # the agent's state decides how to endpoint (feedback.py)

    def on_feedback(self, event: Endpointing) -> None:
        self.config = event.config

    def _decision_delay(self) -> float:
        raise NotImplementedError

    @property
    def config(self) -> EndpointConfig:
        return self.endpointer.config

    @config.setter
    def config(self, config: EndpointConfig) -> None:
        self.endpointer.config = config
        self._set_latency()

    def _set_latency(self) -> None:
        wait = self._decision_delay()
        self.latency = wait + self.endpointer.config.stop
        self.onset_latency = wait + self.endpointer.config.start


class WebrtcVad(_Endpointed):
    """webrtcvad on 10, 20 or 30 ms windows; ``mode`` 0 (lenient) to 3 (aggressive)."""

    # No ``mark``: the agent records a turn's marks from these events' times.

    def __init__(
        self,
        rate: int = 16000,
        *,
        mode: int = 3,
        frame_ms: int = 20,
        config: EndpointConfig | None = None,
        name: str = "vad",
        first_turn: int = 1,
    ) -> None:
        if rate not in WEBRTC_RATES:
            raise ValueError(f"webrtcvad runs at {WEBRTC_RATES} Hz, got {rate}")
        if frame_ms not in (10, 20, 30):
            raise ValueError(f"webrtcvad windows are 10, 20 or 30 ms, got {frame_ms}")
        if mode not in (0, 1, 2, 3):
            raise ValueError(f"webrtcvad mode must be 0-3, got {mode}")
        self.name = name
        self.rate = rate
        self.mode = mode
        self.window = rate * frame_ms // 1000
        self._vad = webrtcvad.Vad(mode)
        self._buf = np.zeros(self.window, np.int16)
        self._bytes = self._buf.data.cast("B")  # the same memory, as bytes
        self._fill = 0
        self._win_pts = 0
        self.endpointer = Endpointer(config, rate, first_turn)
        self.decisions = 0
        self.speech_windows = 0
        self.latency = 0.0
        self.onset_latency = 0.0
        self._set_latency()

    def _decision_delay(self) -> float:
        return self.window / self.rate  # the window must be complete

    def process(self, frame: Frame) -> Sequence[Frame]:
        if type(frame) is Audio:
            events = self._feed(frame)
            if events:
                events.append(frame)
                return events
            return (frame,)
        if type(frame) is EndOfStream:
            return (*self.endpointer.flush(), frame)
        return (frame,)

    def _feed(self, frame: Audio) -> list[Frame] | None:
        if frame.rate != self.rate:
            raise ValueError(f"{self.name}: audio at {frame.rate} Hz, stage built for {self.rate} Hz")
        pcm = frame.pcm
        n = pcm.shape[0]
        win = self.window
        if self._fill == 0 and n == win:
            # The common case (20 ms frames, 20 ms windows): no re-buffering.
            # webrtcvad takes len(buf) as bytes, so it must get bytes, not the
            # int16 array (it would read half the window); tobytes() is the
            # cheapest way there (~0.1 us, cheaper than a view or memoryview).
            return self._decide(pcm.tobytes(), frame.pts, frame.arrival, None)
        out: list[Frame] | None = None
        buf = self._buf
        i = 0
        while i < n:
            if self._fill == 0:
                self._win_pts = frame.pts + i
            k = min(win - self._fill, n - i)
            buf[self._fill : self._fill + k] = pcm[i : i + k]
            self._fill += k
            i += k
            if self._fill == win:
                self._fill = 0
                out = self._decide(self._bytes, self._win_pts, frame.arrival, out)
        return out

    def _decide(
        self, window: bytes | memoryview, pts: int, arrival: float, out: list[Frame] | None
    ) -> list[Frame] | None:
        speech = self._vad.is_speech(window, self.rate)
        self.decisions += 1
        if speech:
            self.speech_windows += 1
        events = self.endpointer.update(speech, pts, self.window, arrival)
        if events:
            if out is None:
                out = []
            out.extend(events)
        return out


class SileroVad(_Endpointed):
    """One call's Silero VAD: a batcher slot, a window re-buffer, an endpointer.

    The slot is taken at construction (so an over-full batcher refuses the call
    before it starts) and released by ``close()``. The batcher keeps the model
    state and the 64/32-sample context per slot; this stage converts int16 to
    float32 once, straight into its window buffer, and submits full windows.
    """

    # No ``mark``: the agent records a turn's marks from these events' times.

    def __init__(
        self,
        batcher: SileroBatcher,
        config: EndpointConfig | None = None,
        *,
        name: str = "vad",
        frame: float = 0.020,
        first_turn: int = 1,
    ) -> None:
        self.name = name
        self.batcher = batcher
        self.rate = batcher.rate
        self.window = batcher.window
        self.frame = frame  # expected frame duration: only for the declared latency
        self.slot: int | None = batcher.register()
        self._results = batcher.results(self.slot)
        self._buf = np.zeros(self.window, np.float32)
        self._fill = 0
        self._win_pts = 0
        self.endpointer = Endpointer(config, self.rate, first_turn)
        self.decisions = 0
        self.windows = 0  # windows submitted
        self.latency = 0.0
        self.onset_latency = 0.0
        self._set_latency()

    def _decision_delay(self) -> float:
        # The window, then up to one batcher tick, then one frame until process()
        # returns the result.
        return self.window / self.rate + self.batcher.config.period + self.frame

    def process(self, frame: Frame) -> Sequence[Frame]:
        if type(frame) is Audio:
            out = self._drain() if self._results else None
            self._feed(frame)
            if out:
                out.append(frame)
                return out
            return (frame,)
        if type(frame) is EndOfStream:
            # Windows still queued in the batcher are not waited for: a stage
            # cannot await, and the stream is over. Close on what is known.
            out = self._drain() if self._results else []
            out.extend(self.endpointer.flush())
            out.append(frame)
            return out
        return (frame,)

    def _drain(self) -> list[Frame]:
        out: list[Frame] = []
        results = self._results
        update = self.endpointer.update
        win = self.window
        while results:
            pts, arrival, p = results.popleft()
            self.decisions += 1
            events = update(p, pts, win, arrival)
            if events:
                out.extend(events)
        return out

    def _feed(self, frame: Audio) -> None:
        if frame.rate != self.rate:
            raise ValueError(f"{self.name}: audio at {frame.rate} Hz, stage built for {self.rate} Hz")
        slot = self.slot
        if slot is None:
            raise RuntimeError(f"{self.name}: audio after close()")
        pcm = frame.pcm
        n = pcm.shape[0]
        buf = self._buf
        win = self.window
        fill = self._fill
        i = 0
        while i < n:
            if fill == 0:
                self._win_pts = frame.pts + i
            k = min(win - fill, n - i)
            # int16 -> float32 in [-1, 1) once, written in place: no temporary.
            np.multiply(pcm[i : i + k], _SCALE, out=buf[fill : fill + k])
            fill += k
            i += k
            if fill == win:
                fill = 0
                self.batcher.submit(slot, buf, self._win_pts, frame.arrival)
                self.windows += 1
        self._fill = fill

    def close(self) -> None:
        """Release the batcher slot (idempotent)."""
        slot, self.slot = self.slot, None
        if slot is not None:
            # Stop reading the slot's deque: the batcher may hand the slot to a new call.
            self._results = collections.deque()
            self.batcher.release(slot)
            log.debug("%s: released Silero slot %d", self.name, slot)
