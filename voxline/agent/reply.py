"""One reply in flight: its task, the audio it produced, and what of it was heard.

The newest audio is kept (bounded), so that after a false barge-in the reply can
resume from the playout position; the text is kept piece by piece with the sample
offset where each piece starts, so that a cut reply leaves in the context only
the words the caller heard (a piece cut midway keeps its words in proportion).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import numpy as np

from voxline.providers.base import PCM

__all__ = ["Reply"]


class Reply:
    __slots__ = (
        "turn", "task", "pcm", "kept", "limit", "samples", "hold", "text", "pieces", "done", "full",
        "draft", "marks", "adopted", "after",
    )

    def __init__(self, turn: int, keep_samples: int, draft: str | None = None) -> None:
        self.turn = turn
        self.task: asyncio.Task[None] | None = None
        self.pcm: collections.deque[PCM] = collections.deque()  # the newest audio produced
        self.kept = 0  # samples in ``pcm``
        self.limit = keep_samples
        self.samples = 0  # samples produced since the reply began
        self.hold = False  # paused by caller speech, or a resume is catching up
        self.text: list[tuple[int, str]] = []  # (sample offset where a piece starts, piece)
        self.pieces = 0  # pieces queued for TTS
        self.done = False
        self.full = ""  # the whole reply as written; the context gets it once it is played
        # A draft answers a speculative transcript before the caller's turn has
        # ended: ``draft`` is the text it answers, its audio is held and its marks
        # are kept here until the turn ends and it is adopted (``draft`` None).
        self.draft = draft
        self.marks: dict[str, float] = {}
        self.adopted = asyncio.Event()  # set when a draft becomes the reply (its tools may run)
        if draft is not None:
            self.hold = True
        else:
            self.adopted.set()
        # A tool's action once the reply has been played: ("end_call" | "transfer", its arguments).
        self.after: tuple[str, dict[str, Any]] | None = None

    def start_piece(self, text: str) -> None:
        self.text.append((self.samples, text))

    def add(self, pcm: PCM) -> None:
        self.samples += len(pcm)
        self.pcm.append(pcm)
        self.kept += len(pcm)
        while self.kept > self.limit and len(self.pcm) > 1:
            self.kept -= len(self.pcm.popleft())

    def unheard(self, position: int) -> PCM | None:
        """The kept audio from sample ``position`` of the reply on (None if none)."""
        if position >= self.samples or not self.pcm:
            return None
        first = self.samples - self.kept  # offset of the oldest kept sample
        return np.concatenate(list(self.pcm))[max(0, position - first) :]

    def heard_text(self, position: int | None) -> str:
        """The words up to sample ``position`` (None: the whole reply)."""
        if position is None:
            return " ".join(t for _, t in self.text)
        words: list[str] = []
        bounds = [start for start, _ in self.text[1:]] + [self.samples]
        for (start, text), end in zip(self.text, bounds):
            if position <= start:
                break
            piece = text.split()
            if position >= end or end <= start:
                words += piece
            else:
                words += piece[: round(len(piece) * (position - start) / (end - start))]
        return " ".join(words)
