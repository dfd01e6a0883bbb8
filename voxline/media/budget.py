"""Latency budgets: declared at build time, checked per turn at run time.

Every stage declares the latency it adds. Like GStreamer's latency query, the
pipeline sums them along the path when it is built (``PathBudget``). Stages that
produce a per-turn mark (``speech_end``, ``transcript``, ``first_token``, ...)
split the path into segments; each segment's budget is the sum of the stages in
it. At run time ``TurnLatency`` collects the marks of each turn, and when a turn
closes it compares each segment (and the whole turn) with its budget. An exceeded
budget is counted and logged with the turn id; it is never silent.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["MARKS", "PathBudget", "TurnRecord", "TurnLatency"]

log = logging.getLogger(__name__)

# The marks of a turn, in path order. ``speech_end`` is when the caller's speech
# ended in the audio (not when the VAD noticed), so voice-to-voice includes the
# VAD's hangover, as the caller experiences it.
MARKS: tuple[str, ...] = (
    "speech_end",
    "vad_end",
    "transcript",
    "first_token",
    "first_sentence",
    "first_tts_audio",
    "first_played",
)

DEFAULT_MAX_TURNS = 64
# Marks are float seconds: an actual equal to its budget must not count as over.
TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class PathBudget:
    """The declared latencies along a pipeline, and the segment budgets per mark."""

    stages: tuple[tuple[str, float], ...]
    segments: tuple[tuple[str, float], ...]  # (mark, budget from the previous mark)

    @property
    def total(self) -> float:
        return sum(lat for _, lat in self.stages)

    def segment(self, mark: str) -> float | None:
        for name, budget in self.segments:
            if name == mark:
                return budget
        return None

    @classmethod
    def build(cls, stages: Iterable[tuple[str, float, str | None]]) -> PathBudget:
        """Sum ``(name, latency, mark)`` triples; a mark closes the segment before it."""
        flat: list[tuple[str, float]] = []
        segments: list[tuple[str, float]] = []
        running = 0.0
        for name, latency, mark in stages:
            if latency < 0:
                raise ValueError(f"stage {name!r} declares a negative latency {latency}")
            flat.append((name, latency))
            running += latency
            if mark is not None:
                segments.append((mark, running))
                running = 0.0
        return cls(tuple(flat), tuple(segments))

    def as_dict(self) -> dict[str, object]:
        return {
            "total_ms": round(self.total * 1000, 3),
            "stages": {n: round(v * 1000, 3) for n, v in self.stages},
            "segments": {n: round(v * 1000, 3) for n, v in self.segments},
        }


@dataclass(slots=True)
class TurnRecord:
    turn: int
    marks: dict[str, float] = field(default_factory=dict)
    closed: bool = False
    segments: dict[str, float] = field(default_factory=dict)  # actual, s
    violations: list[str] = field(default_factory=list)

    @property
    def voice_to_voice(self) -> float | None:
        start = self.marks.get("speech_end")
        end = self.marks.get("first_played")
        if start is None or end is None:
            return None
        return end - start

    def as_dict(self) -> dict[str, object]:
        v2v = self.voice_to_voice
        return {
            "turn": self.turn,
            "marks": dict(self.marks),
            "segments_ms": {k: round(v * 1000, 3) for k, v in self.segments.items()},
            "voice_to_voice_ms": None if v2v is None else round(v2v * 1000, 3),
            "violations": list(self.violations),
        }


class TurnLatency:
    """Per-turn marks against a path budget. Bounded: keeps the last ``max_turns``."""

    def __init__(
        self,
        budget: PathBudget | None = None,
        session_id: str = "",
        max_turns: int = DEFAULT_MAX_TURNS,
    ) -> None:
        self.budget = budget or PathBudget((), ())
        self.session_id = session_id
        self.max_turns = max_turns
        self.turns: OrderedDict[int, TurnRecord] = OrderedDict()
        self.violations: dict[str, int] = {}
        self.closed_turns = 0

    def mark(self, turn: int, name: str, at: float) -> None:
        """Record ``name`` for ``turn`` at time ``at``; the first record of a mark wins."""
        rec = self.turns.get(turn)
        if rec is None:
            rec = self.turns[turn] = TurnRecord(turn)
            while len(self.turns) > self.max_turns:
                self.turns.popitem(last=False)
        rec.marks.setdefault(name, at)

    def close(self, turn: int) -> TurnRecord | None:
        """Compute the turn's segments and count every budget it exceeded."""
        rec = self.turns.get(turn)
        if rec is None or rec.closed:
            return rec
        rec.closed = True
        self.closed_turns += 1
        budgets = dict(self.budget.segments)
        present = [m for m in MARKS if m in rec.marks]
        for prev, m in zip(present, present[1:]):
            actual = rec.marks[m] - rec.marks[prev]
            rec.segments[m] = actual
            # A skipped mark's budget rolls into the next mark that is present.
            span = MARKS[MARKS.index(prev) + 1 : MARKS.index(m) + 1]
            known = [budgets[s] for s in span if s in budgets]
            if known and actual > sum(known) + TOLERANCE:
                self._violate(rec, m, actual, sum(known))
        v2v = rec.voice_to_voice
        if v2v is not None and self.budget.segments and v2v > self.budget.total + TOLERANCE:
            self._violate(rec, "voice_to_voice", v2v, self.budget.total)
        return rec

    def _violate(self, rec: TurnRecord, what: str, actual: float, budget: float) -> None:
        rec.violations.append(what)
        self.violations[what] = self.violations.get(what, 0) + 1
        log.warning(
            "latency budget exceeded: %s took %.1f ms against %.1f ms",
            what,
            actual * 1000,
            budget * 1000,
            extra={"session_id": self.session_id, "turn_id": rec.turn},
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "budget": self.budget.as_dict(),
            "turns": [r.as_dict() for r in self.turns.values()],
            "closed_turns": self.closed_turns,
            "violations": dict(self.violations),
        }
