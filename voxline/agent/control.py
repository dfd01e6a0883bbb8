"""What the control API may do with a session's agent: one small typed interface.

Every agent (``Assistant``, ``Echo``, ``Transcribe``) is an ``AgentControl``:

- ``state``: what the agent is doing, as a short string (the session's
  ``agent_state``; the Assistant's is its turn state, e.g. ``"speaking"``);
- ``capabilities``: which of the control actions it supports (``SAY``,
  ``INTERRUPT``), so the API can refuse an unsupported one up front (409) rather
  than probe the agent's attributes;
- ``say(text)`` and ``interrupt()``: an agent without the capability raises
  ``Unsupported``, whose message names the agent and the action.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["AgentControl", "INTERRUPT", "SAY", "Unsupported"]

SAY = "say"
INTERRUPT = "interrupt"


class Unsupported(Exception):
    """This agent cannot do that (``Echo`` cannot say): the client's request is
    refused, the session goes on."""

    def __init__(self, agent: str, action: str) -> None:
        super().__init__(f"agent {agent!r} cannot {action}")
        self.agent = agent
        self.action = action


@runtime_checkable
class AgentControl(Protocol):
    @property
    def state(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[str]: ...

    def say(self, text: str) -> None: ...

    def interrupt(self) -> None: ...
