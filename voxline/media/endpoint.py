"""Turn endpointing: per-window speech decisions in, SpeechStarted/SpeechEnded out.

Sans-I/O: the endpointer is fed one decision per analysis window (a probability
or a bool, the window's pts and length in samples, the window's arrival time)
and returns the events that decision completes. It never reads a clock and
never calls back; a VAD stage (``voxline.media.vad``) feeds it and forwards the
events.

Three layers, each a few lines:

1. **Hysteresis** turns probabilities into a sticky voiced/unvoiced state: a
   window is voiced when ``p >= threshold`` and unvoiced when
   ``p < threshold - 0.15`` (Silero's own iterator uses the same gap); a window
   in between keeps the previous state, so a probability hovering around the
   threshold does not chatter.
2. **Onset**: ``SpeechStarted`` once voiced windows have lasted ``start`` seconds
   without a break. Its pts is the first voiced window's, where speech started,
   not where it was detected.
3. **Hangover**: ``SpeechEnded`` once unvoiced windows have lasted ``stop``
   seconds, provided the turn so far spans at least ``min_speech``. Its pts is
   the first unvoiced window's, where speech ended.

``min_speech`` defers the end rather than discarding the turn: a pause after
less than ``min_speech`` of speech (a lone "uh —") is taken as part of the turn,
which then ends at the first full hangover once it spans ``min_speech``. So a
turn that already reported ``SpeechStarted`` is always closed by exactly one
``SpeechEnded`` (consumers rely on the pairing), at the latest by ``flush()``.
Keep ``min_speech`` below the shortest reply you expect ("yes" is ~0.25 s),
or such a reply waits for more speech.

All durations are converted to samples once per config, so the per-window work
is integer comparisons.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from .frames import SpeechEnded, SpeechPaused, SpeechStarted

__all__ = ["EndpointConfig", "Endpointer", "EndpointEvent", "HYSTERESIS"]

log = logging.getLogger(__name__)

#: Gap between the speech threshold and the silence threshold (as in Silero's iterator).
HYSTERESIS = 0.15

EndpointEvent = SpeechStarted | SpeechPaused | SpeechEnded
_NONE: tuple[EndpointEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """Endpointing parameters; swap a whole config at run time, never mutate one.

    ``threshold``: speech probability at or above which a window is voiced.
    ``silence``: probability below which a window is unvoiced; default
    ``threshold - 0.15`` (floored at 0.01, as Silero does).
    ``start``: seconds of unbroken voiced windows before SpeechStarted (onset).
    ``stop``: seconds of unvoiced windows before SpeechEnded (hangover).
    ``min_speech``: seconds a turn must span before a hangover may end it.
    ``pause``: seconds of unvoiced windows, shorter than ``stop``, after which a
    ``SpeechPaused`` is sent once per silence (None: never), so recognition can
    start while the hangover runs.
    """

    threshold: float = 0.5
    start: float = 0.2
    stop: float = 0.2
    min_speech: float = 0.0
    silence: float | None = None
    pause: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"endpoint threshold must be in (0, 1], got {self.threshold}")
        if self.silence is not None and not 0.0 < self.silence <= self.threshold:
            raise ValueError(
                f"endpoint silence threshold must be in (0, threshold={self.threshold}], got {self.silence}"
            )
        if self.pause is not None and not 0.0 < self.pause < self.stop:
            raise ValueError(f"endpoint pause must be in (0, stop={self.stop}), got {self.pause}")
        for field_name in ("start", "stop", "min_speech"):
            value = getattr(self, field_name)
            if not 0.0 <= value <= 60.0:
                raise ValueError(f"endpoint {field_name} must be in [0, 60] seconds, got {value}")

    @property
    def silence_threshold(self) -> float:
        if self.silence is not None:
            return self.silence
        return max(self.threshold - HYSTERESIS, 0.01)


class _State(enum.Enum):
    QUIET = "quiet"  # no turn open
    ONSET = "onset"  # voiced, not yet for `start`
    SPEECH = "speech"  # turn open, voiced
    HANGOVER = "hangover"  # turn open, unvoiced, not yet for `stop`


class Endpointer:
    """Onset/hangover state machine over per-window decisions at one sample rate.

    Turn ids: each SpeechStarted takes the next id (``first_turn``, then +1) and
    the matching SpeechEnded carries the same one; ``turn`` is the current or
    last turn's id (``first_turn - 1`` before any).

    Event ``time`` is the arrival time of the window holding the event's pts,
    i.e. when that audio reached voxline, so a latency mark taken from it
    includes the onset/hangover wait in the VAD's share of the budget.
    """

    __slots__ = (
        "rate",
        "_config",
        "_thr",
        "_neg",
        "_start",
        "_stop",
        "_min",
        "_state",
        "_voiced",
        "_onset_pts",
        "_onset_time",
        "_end_pts",
        "_end_time",
        "_turn",
        "started",
        "ended",
        "_pause",
        "_paused",
    )

    def __init__(self, config: EndpointConfig | None = None, rate: int = 16000, first_turn: int = 1) -> None:
        if rate <= 0:
            raise ValueError(f"endpointer rate must be positive, got {rate}")
        self.rate = rate
        self._state = _State.QUIET
        self._voiced = False
        self._onset_pts = 0
        self._onset_time = 0.0
        self._end_pts = 0  # end of the last voiced window, i.e. where speech ended
        self._end_time = 0.0
        self._paused = False  # SpeechPaused sent for the current silence
        self._turn = first_turn - 1
        self.started = 0  # SpeechStarted emitted
        self.ended = 0  # SpeechEnded emitted
        self.config = config if config is not None else EndpointConfig()

    @property
    def config(self) -> EndpointConfig:
        return self._config

    @config.setter
    def config(self, config: EndpointConfig) -> None:
        """Swap parameters; the current state and timers carry over and are
        judged against the new values from the next window on."""
        self._config = config
        self._thr = config.threshold
        self._neg = config.silence_threshold
        self._start = round(config.start * self.rate)
        self._stop = round(config.stop * self.rate)
        self._min = round(config.min_speech * self.rate)
        self._pause = None if config.pause is None else round(config.pause * self.rate)

    @property
    def turn(self) -> int:
        return self._turn

    @property
    def in_speech(self) -> bool:
        """True while a turn is open (SpeechStarted sent, SpeechEnded not yet)."""
        return self._state is _State.SPEECH or self._state is _State.HANGOVER

    @property
    def state(self) -> str:
        return self._state.value

    def update(
        self, p: float | bool, pts: int, samples: int, arrival: float = 0.0
    ) -> tuple[EndpointEvent, ...]:
        """Feed one window's decision; return the events it completes (usually none)."""
        if p >= self._thr:
            voiced = True
        elif p < self._neg:
            voiced = False
        else:
            voiced = self._voiced  # between the thresholds: keep the previous state
        self._voiced = voiced
        end = pts + samples
        state = self._state
        if voiced:
            if state is _State.QUIET:
                self._onset_pts = pts
                self._onset_time = arrival
                state = self._state = _State.ONSET
            elif state is _State.HANGOVER:
                state = self._state = _State.SPEECH
                self._paused = False
            if state is _State.ONSET:
                if end - self._onset_pts >= self._start:
                    self._end_pts = end
                    self._end_time = arrival
                    self._state = _State.SPEECH
                    return (self._started(),)
                return _NONE
            self._end_pts = end
            self._end_time = arrival
            return _NONE
        if state is _State.QUIET:
            return _NONE
        if state is _State.ONSET:
            self._state = _State.QUIET  # a break before `start`: not a turn
            return _NONE
        if state is _State.SPEECH:
            self._end_pts = pts
            self._end_time = arrival
            state = self._state = _State.HANGOVER
        if end - self._end_pts >= self._stop and self._end_pts - self._onset_pts >= self._min:
            self._state = _State.QUIET
            self._paused = False
            return (self._ended(),)
        if self._pause is not None and not self._paused and end - self._end_pts >= self._pause:
            self._paused = True
            return (SpeechPaused(self._end_pts, self.rate, self._end_time, self._turn),)
        return _NONE

    def flush(self) -> tuple[EndpointEvent, ...]:
        """End of stream: close an open turn where its speech ended; drop an onset."""
        state = self._state
        self._state = _State.QUIET
        self._voiced = False
        self._paused = False
        if state is _State.SPEECH or state is _State.HANGOVER:
            return (self._ended(),)
        return _NONE

    def _started(self) -> SpeechStarted:
        self._turn += 1
        self.started += 1
        log.debug("turn %d: speech started at pts %d", self._turn, self._onset_pts)
        return SpeechStarted(self._onset_pts, self.rate, self._onset_time, self._turn)

    def _ended(self) -> SpeechEnded:
        self.ended += 1
        speech = (self._end_pts - self._onset_pts) / self.rate
        log.debug("turn %d: speech ended at pts %d (%.3f s)", self._turn, self._end_pts, speech)
        return SpeechEnded(self._end_pts, self.rate, speech, self._end_time, self._turn)
