"""What an agent's parts hand to the agent: small typed actions.

The ``Listener`` (the caller's side) and the ``Speaker`` (the bot's side) do not
reach into the ``Assistant`` that owns them. When something happens that the
turn-taking must know of, or that the stage reports, a part performs one of
these values through the ``Perform`` it was given, and the Assistant's one
dispatch (``Assistant._perform``) does the rest. Most of these happen inside
a part's own task (a recogniser's reader, a reply being voiced), so a part hands
them on as they happen rather than returning them from a call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from voxline.providers.base import Transcription

from .events import AgentEvent

__all__ = ["Audible", "Failed", "Perform", "PartAction", "RecognitionFailed", "Transcribed"]


@dataclass(frozen=True, slots=True)
class Transcribed:
    """The recogniser gave a result; ``replaces``: a final that decoded the turn
    again from its start (it replaces the words heard so far)."""

    result: Transcription
    replaces: bool = False


@dataclass(frozen=True, slots=True)
class RecognitionFailed:
    """The recogniser failed and was dropped; the next utterance opens a new one."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class Audible:
    """Audio of the reply to ``turn`` has left the agent (towards playout)."""

    turn: int


@dataclass(frozen=True, slots=True)
class Failed:
    """A provider failed a reply: counted under ``count``, logged, and reported
    as an error of ``provider``."""

    count: str
    provider: str
    turn: int
    error: BaseException


PartAction = Transcribed | RecognitionFailed | Audible | Failed | AgentEvent
Perform = Callable[[PartAction], None]
