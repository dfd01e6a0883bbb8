"""What an agent reports to its session's observers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AgentEvent", "Observer"]


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """One event for the control API's stream and the metrics."""

    kind: str  # state, transcript, reply, heard, error, dtmf, latency
    turn: int
    data: dict[str, object]


Observer = Callable[[AgentEvent], None]
