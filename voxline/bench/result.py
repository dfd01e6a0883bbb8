"""From the callers' rows to ``result.json``: percentiles, barge-in, the
service's per-stage marks joined to each turn, budgets."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from voxline.media.budget import MARKS

from .wer import wer

__all__ = ["percentiles", "join_stages", "join_heard", "summarise", "SCHEMA"]

SCHEMA = 1
SAME_CLOCK = 1.0  # s: a service mark this close to the caller's time is on the same clock


def percentiles(values: Iterable[float | None]) -> dict[str, Any]:
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "min_ms": None, "max_ms": None,
                "mean_ms": None}
    a = np.asarray(xs)
    return {"n": len(xs), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "p99_ms": round(float(np.percentile(a, 99)), 1),
            "min_ms": round(float(a.min()), 1), "max_ms": round(float(a.max()), 1),
            "mean_ms": round(float(a.mean()), 1)}


def join_stages(rows: list[dict[str, Any]], records: Sequence[dict[str, Any]]) -> None:
    """Put each turn's service marks (ms after the caller's speech ended) on its row.

    A service on this machine shares the caller's monotonic clock, so its marks
    are placed as they are; one elsewhere is aligned on its own ``speech_end``."""
    used: set[int] = set()

    def anchor_of(rec: dict[str, Any]) -> float | None:
        marks = (rec.get("data") or {}).get("marks") or {}
        value = marks.get("speech_end", marks.get("vad_end"))
        return float(value) if value is not None else None

    # Same clock when any mark falls near any caller turn: then only near ones are joined.
    shared = any(abs(a - r["speech_end"]) <= SAME_CLOCK for r in rows if r.get("speech_end") is not None
                 for a in map(anchor_of, records) if a is not None)
    for row in rows:
        end = row.get("speech_end")
        if end is None:
            continue
        best, best_d = None, None
        for i, rec in enumerate(records):
            if i in used:
                continue
            marks = (rec.get("data") or {}).get("marks") or {}
            anchor = marks.get("speech_end", marks.get("vad_end"))
            if anchor is None:
                continue
            d = abs(anchor - end)
            if best_d is None or d < best_d:
                best, best_d = i, d
        if best is None:
            continue
        rec = records[best]
        marks = rec["data"]["marks"]
        if best_d is not None and best_d <= SAME_CLOCK:
            base, clock = end, "shared"
        elif shared:
            continue
        else:
            base, clock = marks.get("speech_end", end), "aligned"
        used.add(best)
        row["stages_ms"] = {m: round((marks[m] - base) * 1000, 1) for m in MARKS if m in marks}
        row["stages_clock"] = clock
        row["service_turn"] = rec.get("turn")
        row["violations"] = (rec.get("data") or {}).get("violations", [])


def join_heard(rows: list[dict[str, Any]], events: Sequence[dict[str, Any]]) -> None:
    """Put on each turn what the service heard the caller say: the last final
    caller transcript of the service turn its marks were joined to."""
    heard: dict[Any, str] = {}
    for ev in events:
        data = ev.get("data") or {}
        if ev.get("kind") == "transcript" and data.get("final") and data.get("who") == "caller":
            heard[ev.get("turn")] = str(data.get("text") or "")
    for row in rows:
        turn = row.get("service_turn")
        if turn is not None and turn in heard:
            row["heard"] = heard[turn]


def heard_wer(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """WER of the caller's side as the service heard it, over the turns whose
    words are known (spoken from a script or a transcribed recording)."""
    scored = [r for r in rows if r.get("text") and r.get("service_turn") is not None]
    value, errs, total = wer((r["text"], r.get("heard", "")) for r in scored)
    out: dict[str, Any] = {"wer": value, "errors": errs, "words": total, "turns": len(scored),
                           "unheard": sum(1 for r in scored if "heard" not in r)}
    voices = sorted({r["voice"] for r in scored if r.get("voice")})
    if len(voices) > 1:
        out["by_voice"] = {v: wer((r["text"], r.get("heard", "")) for r in scored if r.get("voice") == v)[0]
                           for v in voices}
    return out


def summarise(rows: list[dict[str, Any]], budgets: dict[str, Any] | None) -> dict[str, Any]:
    v2v = percentiles(r.get("v2v_ms") for r in rows)
    barges = [r["bargein"] for r in rows if r.get("bargein", {}).get("talked_over")]
    coughs = [r["cough"] for r in rows if r.get("cough", {}).get("over_reply")]
    stop = percentiles(b.get("stop_ms") for b in barges if b.get("stopped"))
    clear = percentiles(b.get("clear_ms") for b in barges)
    stages: dict[str, Any] = {}
    for m in MARKS:
        vals = [r["stages_ms"][m] for r in rows if m in r.get("stages_ms", {})]
        if vals:
            stages[m] = round(float(np.median(vals)), 1)
    return {
        "turns": len(rows),
        "answered": sum(1 for r in rows if r.get("answered")),
        "v2v": v2v,
        "bargein": {
            "n": len(barges),
            "stopped": sum(1 for b in barges if b.get("stopped")),
            "answered": sum(1 for b in barges if b.get("answered")),
            "stop_ms": {"p50": stop["p50_ms"], "p95": stop["p95_ms"], "max": stop["max_ms"], "n": stop["n"]},
            "clear_ms": {"p50": clear["p50_ms"], "p95": clear["p95_ms"], "n": clear["n"]},
            "answer_v2v_ms": percentiles(b.get("answer_v2v_ms") for b in barges),
        },
        "cough": {"n": len(coughs), "continued": sum(1 for c in coughs if c.get("continued"))},
        "heard": heard_wer(rows),
        "stages": {"p50_ms_after_speech_end": stages, "budget_ms": budgets or {}},
    }
