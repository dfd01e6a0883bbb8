"""What every caller line is, and where it calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["Line", "Listener", "Target", "LineError"]


class LineError(Exception):
    """The line could not be opened or broke (refused, closed by the far end)."""


class Listener(Protocol):
    def heard(self, pcm: npt.NDArray[np.int16], rate: int, arrival: float) -> None: ...
    def cleared(self, at: float) -> None: ...
    def event(self, event: dict[str, Any]) -> None: ...
    def closed(self, reason: str) -> None: ...


@dataclass
class Target:
    """A running voxline: its HTTP base URL, a token, its AudioSocket address,
    and (when the harness started it in this process) the app itself."""

    url: str = "http://127.0.0.1:8080"
    token: str | None = None
    audiosocket: tuple[str, int] = ("127.0.0.1", 9092)
    app: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):] if self.url.startswith("http") else self.url

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


class Line(Protocol):
    name: str
    rate: int  # the caller's audio is sent at this rate
    session_id: str | None
    can_impair: bool  # whether loss, jitter and reordering of what is sent apply on this wire

    async def open(self) -> None: ...
    async def send(self, pcm: npt.NDArray[np.int16]) -> None: ...
    async def info(self) -> dict[str, Any] | None: ...
    async def close(self) -> None: ...
