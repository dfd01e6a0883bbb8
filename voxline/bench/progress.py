"""A progress bar on stderr (one line redrawn on a terminal, a line now and then otherwise)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, total: int, label: str = "turns", stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = max(1, total)
        self.done = 0
        self.label = label
        self.note = ""
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0
        self._t0 = time.monotonic()

    def step(self, note: str = "") -> None:
        self.done += 1
        self.note = note or self.note
        self.draw()

    def draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not self._tty and not force and now - self._last < 5 and self.done < self.total:
            return
        self._last = now
        width = 30
        filled = int(width * min(self.done, self.total) / self.total)
        bar = "#" * filled + "." * (width - filled)
        line = f"[{bar}] {self.done}/{self.total} {self.label} {now - self._t0:5.0f}s {self.note}"
        if self._tty:
            self.stream.write("\r" + line[:160].ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.draw(force=True)
            if self._tty:
                self.stream.write("\n")
            self.stream.flush()
