"""``voxline bench compare A.json B.json``: two runs side by side, with B/A."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["compare", "FIGURES"]

FIGURES: tuple[tuple[str, str], ...] = (
    ("v2v.p50_ms", "V2V p50 (ms)"),
    ("v2v.p95_ms", "V2V p95 (ms)"),
    ("v2v.p99_ms", "V2V p99 (ms)"),
    ("bargein.stop_ms.p50", "barge-in stop p50 (ms)"),
    ("bargein.clear_ms.p50", "clear p50 (ms)"),
    ("answered", "answered"),
    ("turns", "turns"),
    ("capacity.knee", "capacity knee (callers)"),
)


def _get(d: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)  # type: ignore[assignment]
    return d


def compare(a_path: str | Path, b_path: str | Path) -> str:
    a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
    rows = [("", "A", "B", "B/A")]
    for label, key in (("transport", "transport"), ("agent", "agent"), ("calls", "calls"),
                       ("service", "service.version")):
        rows.append((label, str(_get(a, key)), str(_get(b, key)), ""))
    for path, label in FIGURES:
        x, y = _get(a, path), _get(b, path)
        ratio = f"{y / x:.2f}" if isinstance(x, int | float) and isinstance(y, int | float) and x else ""
        rows.append((label, "–" if x is None else f"{x:g}", "–" if y is None else f"{y:g}", ratio))
    stages = sorted(set(_get(a, "stages.p50_ms_after_speech_end") or {}) | set(
        _get(b, "stages.p50_ms_after_speech_end") or {}))
    for m in stages:
        x = (_get(a, "stages.p50_ms_after_speech_end") or {}).get(m)
        y = (_get(b, "stages.p50_ms_after_speech_end") or {}).get(m)
        ratio = f"{y / x:.2f}" if isinstance(x, int | float) and isinstance(y, int | float) and x else ""
        rows.append((f"  {m} p50 (ms)", "–" if x is None else f"{x:g}", "–" if y is None else f"{y:g}", ratio))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"A: {a_path}", f"B: {b_path}"]
    for r in rows:
        lines.append("  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]))
    return "\n".join(lines)
