"""``voxline bench``: callers against a service, the result, the report.

``bench(options)`` runs ``calls`` callers at once (each its own line over the
chosen transport, started ``stagger`` s apart) through the script; with
``ramp``, levels of 1, 2, 4, ... callers until voice-to-voice p95 exceeds its
budget, audio gaps appear or admission refuses, then one bisection step: the
knee is the most callers that held.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .caller import Caller, Ears, Impairment
from .lines import TRANSPORTS, Target, open_line
from .lines.base import LineError
from .progress import Progress
from .result import SCHEMA, join_heard, join_stages, percentiles, summarise
from .script import Turn

__all__ = ["Options", "bench", "run_level", "write_result"]

REFUSED_CLOSE = "1013"


@dataclass
class Options:
    transport: str = "raw"
    calls: int = 1
    turns: int = 6
    agent: str | None = None
    url: str | None = None
    token: str | None = None
    audiosocket: str = "127.0.0.1:9092"
    sip: str | None = None
    config: str | None = None
    script: str | None = None
    speech: str = "auto"  # auto | synthetic | sphinx | tts
    bargein: bool = True
    ramp: bool = False
    max_calls: int = 32
    v2v_budget_ms: float | None = None
    loss: float = 0.0
    jitter_ms: float = 0.0
    reorder: float = 0.0
    seed: int = 0
    stagger: float = 0.25
    reply_timeout: float = 15.0
    transcribe: bool = False
    out: str | None = None
    progress: bool = True
    delay: float = 0.3  # the synthetic delay agent's, when the harness starts the service
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def impairment(self) -> Impairment:
        return Impairment(self.loss, self.jitter_ms / 1000, self.reorder, self.seed)


async def run_call(index: int, target: Target, opts: Options, turns: list[Turn],
                   progress: Progress | None = None) -> dict[str, Any]:
    ears = Ears()
    if opts.transcribe:
        ears.capture = []
    line = open_line(opts.transport, target, opts.agent, ears)
    out: dict[str, Any] = {"call": index, "rows": [], "error": None}
    t0 = time.monotonic()
    try:
        await line.open()
    except LineError as exc:
        out["error"] = f"refused: {exc}"
        out["refused"] = True
        if progress is not None:
            for _ in turns:
                progress.step("refused")
        return out
    out["connect_ms"] = round((time.monotonic() - t0) * 1000, 1)
    caller = Caller(index, line, ears, turns, opts.impairment, opts.reply_timeout)

    def turn_done(row: dict[str, Any]) -> None:
        if progress is not None:
            progress.step(f"call {index} turn {row['turn']}: v2v {row.get('v2v_ms')} ms")

    caller.on_turn = turn_done
    try:
        out["rows"] = await caller.run()
        info = await line.info()
    finally:
        with contextlib.suppress(Exception):
            await line.close()
    if progress is not None:
        for _ in range(len(turns) - len(out["rows"])):
            progress.step("call ended early")
    out["error"] = caller.mouth.error or (ears.closed_reason if len(out["rows"]) < len(turns) else None)
    if not out["rows"] and ears.closed_reason and REFUSED_CLOSE in ears.closed_reason:
        out["refused"] = True  # a WebSocket door refuses after the upgrade: close 1013, Try Again Later
    out["session_id"] = line.session_id
    out["wire"] = {"frames_sent": caller.mouth.frames, "lost": caller.mouth.lost,
                   "reordered": caller.mouth.reordered, "frames_heard": ears.frames, "gaps": ears.gaps,
                   "clears": len(ears.clears), "late_sends": caller.mouth.late_frames,
                   "impaired": caller.mouth.impair is not None}
    records = ears.latency
    if not records and info is not None:  # no event stream: the session's detail keeps recent turns
        records = [{"turn": t.get("turn"), "data": t} for t in (info.get("latency") or {}).get("turns", [])]
    join_stages(out["rows"], records)
    join_heard(out["rows"], ears.events)
    if info is not None:
        lat = info.get("latency") or {}
        out["budget_ms"] = lat.get("budget")
    if ears.capture is not None:
        out["_capture"] = ears.capture
    return out


async def run_level(target: Target, opts: Options, turns: list[Turn], calls: int,
                    progress: Progress | None = None) -> list[dict[str, Any]]:
    async def one(i: int) -> dict[str, Any]:
        await asyncio.sleep(i * opts.stagger)
        return await run_call(i, target, opts, turns, progress)

    return list(await asyncio.gather(*(one(i) for i in range(calls))))


def _rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for r in results for row in r["rows"]]


def _budget(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r["budget_ms"] for r in results if r.get("budget_ms")), None)


def _level_summary(calls: int, results: list[dict[str, Any]], budget_ms: float | None) -> dict[str, Any]:
    rows = _rows(results)
    v2v = percentiles(r.get("v2v_ms") for r in rows)
    refused = sum(1 for r in results if r.get("refused"))
    gaps = sum(r.get("wire", {}).get("gaps", 0) for r in results)
    unanswered = sum(1 for r in rows if not r.get("answered"))
    reasons = []
    if refused:
        reasons.append(f"{refused} refused")
    if gaps:
        reasons.append(f"{gaps} audio gaps")
    if budget_ms is not None and v2v["p95_ms"] is not None and v2v["p95_ms"] > budget_ms:
        reasons.append(f"v2v p95 {v2v['p95_ms']} ms > budget {budget_ms} ms")
    if rows and unanswered > len(rows) // 10:
        reasons.append(f"{unanswered} of {len(rows)} turns unanswered")
    return {"calls": calls, "v2v": v2v, "refused": refused, "gaps": gaps, "unanswered": unanswered,
            "turns": len(rows), "held": not reasons, "reasons": reasons}


async def ramp(target: Target, opts: Options, turns: list[Turn], budget_ms: float | None,
               progress: Progress | None) -> dict[str, Any]:
    levels: list[dict[str, Any]] = []
    tried: dict[int, dict[str, Any]] = {}

    async def level(n: int) -> dict[str, Any]:
        results = await run_level(target, opts, turns, n, None)
        s = _level_summary(n, results, budget_ms)
        tried[n] = s
        levels.append(s)
        if progress is not None:
            progress.step(f"{n} callers: {'held' if s['held'] else 'failed: ' + '; '.join(s['reasons'])}")
        return s

    n, last_ok, first_bad = 1, 0, None
    while n <= opts.max_calls:
        if (await level(n))["held"]:
            last_ok = n
            n *= 2
        else:
            first_bad = n
            break
    if first_bad is not None and first_bad - last_ok > 1:
        mid = (first_bad + last_ok) // 2
        if mid > last_ok and (await level(mid))["held"]:
            last_ok = mid
        else:
            first_bad = mid
    levels.sort(key=lambda s: s["calls"])
    bad = tried.get(first_bad) if first_bad is not None else None
    return {"levels": levels, "knee": last_ok, "first_failed": first_bad,
            "reason": "; ".join(bad["reasons"]) if bad else f"held up to --max-calls {opts.max_calls}",
            "budget_v2v_ms": budget_ms}


def _machine() -> dict[str, Any]:
    out: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()}
    with contextlib.suppress(OSError):
        out["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    return out


async def bench(opts: Options, target: Target, turns: list[Turn], service: dict[str, Any]) -> dict[str, Any]:
    if opts.transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
    started = time.time()
    progress = Progress(opts.calls * len(turns), "turns", enabled=opts.progress)
    progress.draw(force=True)
    results = await run_level(target, opts, turns, opts.calls, progress)
    progress.close()
    rows = _rows(results)
    budgets = _budget(results)
    summary = summarise(rows, budgets)
    budget_total = opts.v2v_budget_ms
    if budget_total is None and budgets:
        budget_total = budgets.get("total_ms")
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": started,
        "duration_s": round(time.time() - started, 1),
        "transport": opts.transport,
        "agent": opts.agent or (service.get("config") or {}).get("agent"),
        "calls": opts.calls,
        "turns_per_call": len(turns),
        "script": [{"kind": t.kind, "text": t.text, "seconds": round(len(t.audio) / 16000, 2),
                    **({"voice": t.voice} if t.voice else {})} for t in turns],
        "service": service,
        "options": {k: v for k, v in asdict(opts).items() if k not in ("token", "overrides")},
        "impairment": {"loss": opts.loss, "jitter_ms": opts.jitter_ms, "reorder": opts.reorder,
                       "applied": any(r.get("wire", {}).get("impaired") for r in results)},
        "machine": _machine(),
        **summary,
        "v2v_budget_ms": budget_total,
        "errors": [r["error"] for r in results if r.get("error")],
        "wire": [dict(call=r["call"], **r.get("wire", {})) for r in results],
        "rows": rows,
    }
    if opts.transcribe:
        result["understood"] = await _check_replies(results, turns)
    if opts.ramp:
        rp = Progress(8, "ramp levels", enabled=opts.progress)
        result["capacity"] = await ramp(target, opts, turns, budget_total, rp)
        rp.close()
    for r in results:
        r.pop("_capture", None)
    return result


async def _check_replies(results: list[dict[str, Any]], turns: list[Turn]) -> dict[str, Any]:
    """Transcribe each reply heard (whisper) and look for the words expected."""
    from .understand import check_replies

    return await check_replies(results, turns)


def write_result(result: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    from .report import render

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    js = d / "result.json"
    js.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    html = d / "report.html"
    html.write_text(render(result))
    return js, html
