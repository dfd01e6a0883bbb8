"""Typed feedback inside a pipeline: what travels against the media's direction.

Media flows downstream through links. A few facts must flow the other way, and
they used to be closures wired by hand around the pipeline: playout telling the
agent a mark was played and how much of a turn the caller has heard, the agent
telling the VAD how to endpoint in its current state. Here they are typed events
on a per-pipeline ``Feedback`` bus, declared by the stages themselves:

- a stage that wants an event declares ``listens = (Played, ...)`` and has
  ``on_feedback(event)``; the pipeline builds the table when it is built, so who
  hears what is visible in the stage classes, not in wiring code;
- any stage (or the transport, through the runtime) publishes with
  ``ctx.feedback.publish(event)``;
- "how much of turn N has the caller heard" is a question, not an event: the
  egress answers it (``provide_heard``), everyone else asks ``heard(turn)``.

Delivery is a synchronous call on the event loop: an event cannot be dropped,
reordered or delayed behind media. A listener that raises is logged and counted;
it does not stop the others or the publisher. An event nobody listens to is
counted (``unheard``), which a test can check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .endpoint import EndpointConfig
from .frames import Mark

__all__ = ["Played", "Endpointing", "Feedback", "FeedbackEvent", "Listener"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Played:
    """``mark`` reached the caller at ``at``: sent into its slot by playout (or
    taken by a pulling peer), or ``confirmed`` by the far end (Twilio and Telnyx
    marks, Plivo checkpoints)."""

    mark: Mark
    at: float
    confirmed: bool = False


@dataclass(frozen=True, slots=True)
class Endpointing:
    """The agent's state changed: endpoint the caller's speech with ``config``."""

    config: EndpointConfig


FeedbackEvent = Played | Endpointing


@runtime_checkable
class Listener(Protocol):
    name: str
    listens: tuple[type, ...]

    def on_feedback(self, event: Any) -> None: ...


class Feedback:
    """One pipeline's feedback table; see the module docstring."""

    __slots__ = ("_table", "_heard", "_log", "unheard", "failures")

    def __init__(self, stages: Iterable[object] = (), log_: logging.LoggerAdapter[logging.Logger] | None = None):
        self._table: dict[type, list[Callable[[Any], None]]] = {}
        self._heard: Callable[[int], float] | None = None
        self._log = log_ or logging.LoggerAdapter(log, {})
        self.unheard = 0
        self.failures = 0
        for stage in stages:
            self.add(stage)

    def add(self, stage: object) -> None:
        """Register ``stage`` for every event type it declares in ``listens``."""
        kinds = getattr(stage, "listens", ())
        if not kinds:
            return
        handler = getattr(stage, "on_feedback", None)
        if handler is None:
            raise TypeError(f"stage {getattr(stage, 'name', stage)!r} listens to {kinds} but has no on_feedback")
        for kind in kinds:
            self._table.setdefault(kind, []).append(handler)

    def listeners(self, kind: type) -> int:
        return len(self._table.get(kind, ()))

    def publish(self, event: FeedbackEvent) -> int:
        """Deliver ``event`` to every listener of its type now; return how many."""
        handlers = self._table.get(type(event))
        if not handlers:
            self.unheard += 1
            return 0
        for handler in handlers:
            try:
                handler(event)
            except Exception:
                self.failures += 1
                self._log.exception("feedback listener failed on %s", type(event).__name__)
        return len(handlers)

    # -- what the caller has heard ---------------------------------------------

    def provide_heard(self, heard: Callable[[int], float]) -> None:
        """The egress says how much of a turn the caller has heard (one provider)."""
        if self._heard is not None and self._heard is not heard:
            raise RuntimeError("a pipeline has one egress: heard() is already provided")
        self._heard = heard

    def heard(self, turn: int) -> float:
        """Seconds of ``turn``'s audio the caller has heard (0 with no egress)."""
        return self._heard(turn) if self._heard is not None else 0.0
