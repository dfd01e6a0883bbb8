"""The frames that flow through a pipeline: a small closed set, matched with ``match``.

Frames are slotted dataclasses rather than a class tree: a stage dispatches with
``match frame: case Audio(): ...`` and never relies on subclasses calling
``super()``. Every frame carries ``turn``, the id of the conversational turn it
belongs to (0 before the first turn), so latency marks join up per turn.

Data frames flow through links in order and may be dropped by a link's overflow
policy; control frames (``Interrupt``, ``EndOfStream``) travel out of band, ahead
of pending data, and are never dropped.

``Payload`` is not in the design's original list: encoded audio needs a frame of
its own so that decoding is an ordinary transform stage (with its cost measured
and its latency declared) instead of something each transport does privately.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = [
    "Audio",
    "Payload",
    "SpeechStarted",
    "SpeechPaused",
    "SpeechEnded",
    "Transcript",
    "TextChunk",
    "Dtmf",
    "Mark",
    "Interrupt",
    "EndOfStream",
    "Frame",
    "DataFrame",
    "ControlFrame",
    "CONTROL_TYPES",
    "is_control",
    "silence",
]

PCM = npt.NDArray[np.int16]


@dataclass(slots=True)
class Audio:
    """Mono signed 16-bit PCM.

    ``pts`` counts samples at ``rate`` from the start of the stream; ``arrival`` is
    the monotonic time (the session clock) at which the audio entered voxline.
    """

    pcm: PCM
    rate: int
    pts: int = 0
    arrival: float = 0.0
    turn: int = 0

    @property
    def samples(self) -> int:
        return int(self.pcm.shape[0])

    @property
    def duration(self) -> float:
        return float(self.pcm.shape[0]) / self.rate


@dataclass(slots=True)
class Payload:
    """Encoded audio as it came off (or goes onto) the wire: one codec frame."""

    data: bytes
    codec: str
    rate: int
    pts: int = 0
    arrival: float = 0.0
    turn: int = 0


@dataclass(slots=True)
class SpeechStarted:
    """The caller started speaking at ``pts`` (samples at ``rate``)."""

    pts: int
    rate: int
    time: float = 0.0
    turn: int = 0


@dataclass(slots=True)
class SpeechPaused:
    """The caller has been silent since ``pts`` for the endpointer's ``pause``,
    less than its hangover: the turn may be ending. A recogniser can start on
    what was said while the hangover runs; ``SpeechEnded`` still decides."""

    pts: int
    rate: int
    time: float = 0.0
    turn: int = 0


@dataclass(slots=True)
class SpeechEnded:
    """The caller stopped speaking at ``pts``; ``speech`` is the speech duration in s."""

    pts: int
    rate: int
    speech: float = 0.0
    time: float = 0.0
    turn: int = 0


@dataclass(slots=True)
class Transcript:
    text: str
    final: bool
    time: float = 0.0
    turn: int = 0
    confidence: float | None = None


@dataclass(slots=True)
class TextChunk:
    """Text for the bot to speak; ``final`` marks the last chunk of a reply."""

    text: str
    final: bool = False
    time: float = 0.0
    turn: int = 0


@dataclass(slots=True)
class Dtmf:
    digit: str
    duration: float = 0.0
    time: float = 0.0
    turn: int = 0


@dataclass(slots=True)
class Mark:
    """A named position in the outgoing audio; egress reports it when played."""

    name: str
    time: float = 0.0
    turn: int = 0


@dataclass(slots=True)
class Interrupt:
    """Stop what is being said now: flush downstream data, cancel in-flight work."""

    reason: str = "barge-in"
    time: float = 0.0
    turn: int = 0


@dataclass(slots=True)
class EndOfStream:
    """No more frames follow; stages flush what they hold and pass this on."""

    reason: str = "end"
    time: float = 0.0
    turn: int = 0
    extra: dict[str, object] = field(default_factory=dict)


DataFrame = (
    Audio | Payload | SpeechStarted | SpeechPaused | SpeechEnded | Transcript | TextChunk | Dtmf | Mark
)
ControlFrame = Interrupt | EndOfStream
Frame = DataFrame | ControlFrame
CONTROL_TYPES: tuple[type, ...] = (Interrupt, EndOfStream)


def is_control(frame: Frame) -> bool:
    return type(frame) is Interrupt or type(frame) is EndOfStream


def silence(samples: int, rate: int, pts: int = 0, arrival: float = 0.0, turn: int = 0) -> Audio:
    return Audio(np.zeros(samples, dtype=np.int16), rate, pts, arrival, turn)
