"""voxline.agent: the conversation (``Assistant``) and agents for testing a line
(``Echo``, ``Transcribe``); the control API reaches each through ``AgentControl``."""

from .control import INTERRUPT, SAY, AgentControl, Unsupported

__all__ = ["AgentControl", "INTERRUPT", "SAY", "Unsupported"]
