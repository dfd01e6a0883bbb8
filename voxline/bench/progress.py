"""The run's progress bar on stderr, drawn by tqdm: redrawn in place on a
terminal; elsewhere (a CI log, a pipe) a line every few seconds."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

__all__ = ["Progress"]


class Progress:
    def __init__(self, total: int, label: str = "turns", stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = max(1, total)
        self.done = 0
        self.label = label
        self.note = ""
        self.enabled = enabled
        out = stream or sys.stderr
        tty = bool(getattr(out, "isatty", lambda: False)())
        self._bar = tqdm(total=self.total, unit=f" {label}", file=out, disable=not enabled, dynamic_ncols=tty,
                         mininterval=0.1 if tty else 5.0, ascii=not tty, leave=True)

    def step(self, note: str = "") -> None:
        self.done += 1
        self.note = note or self.note
        self._bar.set_postfix_str(self.note[:60], refresh=False)
        self._bar.update(1)

    def draw(self, force: bool = False) -> None:
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()
