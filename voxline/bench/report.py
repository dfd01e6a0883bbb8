"""``report.html`` from a result: one self-contained page (no network, no
script), its charts inline SVG: the latency distribution, the per-stage
waterfall of each turn, the capacity curve after a ramp."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from voxline.media.budget import MARKS

__all__ = ["render", "histogram_svg", "waterfall_svg", "capacity_svg"]

COLOURS = {"speech_end": "#999", "vad_end": "#4e79a7", "transcript": "#f28e2b", "first_token": "#e15759",
           "first_sentence": "#76b7b2", "first_tts_audio": "#59a14f", "first_played": "#edc948",
           "heard": "#b07aa1"}
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:6px 0} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
th{background:#f6f6f6} td:first-child,th:first-child{text-align:left}
.kpi{display:inline-block;margin:6px 18px 6px 0;padding:8px 14px;background:#f6f8fa;border-radius:6px}
.kpi b{display:block;font-size:20px} .muted{color:#777} .bad{color:#b00} .ok{color:#070}
svg text{font:11px system-ui,sans-serif;fill:#333}
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def _ms(x: object) -> str:
    return "–" if x is None else f"{float(x):.0f} ms"  # type: ignore[arg-type]


def histogram_svg(values: Sequence[float], marks: dict[str, float | None], width: int = 720,
                  height: int = 220, budget: float | None = None) -> str:
    """Voice-to-voice per turn as a histogram, with p50/p95/p99 and the budget marked."""
    if not values:
        return '<p class="muted">no turns were answered</p>'
    lo, hi = min(values), max(values)
    if budget is not None:
        hi = max(hi, budget)
    span = max(hi - lo, 20.0)
    lo, hi = max(0.0, lo - span * 0.1), hi + span * 0.1
    bins = min(40, max(8, int(math.sqrt(len(values)) * 3)))
    step = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / step))] += 1
    top = max(counts)
    pad_l, pad_b, plot_w, plot_h = 40, 30, width - 60, height - 50
    def x(v: float) -> float:
        return pad_l + (v - lo) / (hi - lo) * plot_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for i, c in enumerate(counts):
        h = c / top * plot_h
        parts.append(f'<rect x="{x(lo + i * step):.1f}" y="{10 + plot_h - h:.1f}" width="{plot_w / bins - 1:.1f}" '
                     f'height="{h:.1f}" fill="#4e79a7"><title>{lo + i * step:.0f}-{lo + (i + 1) * step:.0f} ms: '
                     f'{c}</title></rect>')
    parts.append(f'<line x1="{pad_l}" y1="{10 + plot_h}" x2="{pad_l + plot_w}" y2="{10 + plot_h}" stroke="#333"/>')
    for k in range(6):
        v = lo + k * (hi - lo) / 5
        parts.append(f'<text x="{x(v):.1f}" y="{height - 10}" text-anchor="middle">{v:.0f}</text>')
    parts.append(f'<text x="{pad_l + plot_w}" y="{height - 22}" text-anchor="end">ms</text>')
    lines = [(n, v, "#e15759") for n, v in marks.items() if v is not None]
    if budget is not None:
        lines.append(("budget", budget, "#222"))
    for i, (name, v, colour) in enumerate(lines):
        parts.append(f'<line x1="{x(v):.1f}" y1="10" x2="{x(v):.1f}" y2="{10 + plot_h}" stroke="{colour}" '
                     f'stroke-dasharray="4 3"/><text x="{x(v) + 3:.1f}" y="{22 + 12 * i}">{_e(name)} {v:.0f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def waterfall_svg(rows: Sequence[dict[str, Any]], width: int = 1000, row_h: int = 16, limit: int = 60) -> str:
    """Each turn's marks after the caller's speech ended, stage by stage, then the caller hearing it."""
    turns = [r for r in rows if r.get("v2v_ms") is not None][:limit]
    if not turns:
        return '<p class="muted">no answered turns</p>'
    ends = [max([r["v2v_ms"], *r.get("stages_ms", {}).values()]) for r in turns]
    hi = max(ends) * 1.05 or 1.0
    pad_l, plot_w = 90, width - 110
    height = 40 + row_h * len(turns)
    def x(v: float) -> float:
        return pad_l + max(0.0, v) / hi * plot_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for i, r in enumerate(turns):
        y = 10 + i * row_h
        parts.append(f'<text x="4" y="{y + row_h - 4}">call {r.get("call")} turn {r.get("turn")}</text>')
        stages = r.get("stages_ms", {})
        prev = 0.0
        for m in MARKS[1:]:
            if m in stages:
                v = stages[m]
                parts.append(f'<rect x="{x(prev):.1f}" y="{y + 2}" width="{max(1.0, x(v) - x(prev)):.1f}" '
                             f'height="{row_h - 4}" fill="{COLOURS[m]}"><title>{m}: +{v - prev:.0f} ms '
                             f'(at {v:.0f} ms)</title></rect>')
                prev = max(prev, v)
        v2v = r["v2v_ms"]
        parts.append(f'<rect x="{x(prev):.1f}" y="{y + 2}" width="{max(1.0, x(v2v) - x(prev)):.1f}" '
                     f'height="{row_h - 4}" fill="{COLOURS["heard"]}"><title>heard at the caller: {v2v:.0f} ms'
                     f'</title></rect>')
        parts.append(f'<text x="{x(v2v) + 3:.1f}" y="{y + row_h - 4}">{v2v:.0f}</text>')
    base = 10 + row_h * len(turns)
    for k in range(6):
        v = k * hi / 5
        parts.append(f'<line x1="{x(v):.1f}" y1="10" x2="{x(v):.1f}" y2="{base}" stroke="#ddd"/>'
                     f'<text x="{x(v):.1f}" y="{base + 14}" text-anchor="middle">{v:.0f} ms</text>')
    lx = pad_l
    for m in (*MARKS[1:], "heard"):
        parts.append(f'<rect x="{lx}" y="{base + 20}" width="10" height="10" fill="{COLOURS[m]}"/>'
                     f'<text x="{lx + 13}" y="{base + 29}">{m}</text>')
        lx += 14 + 7 * len(m) + 10
    parts.append("</svg>")
    return "".join(parts).replace(f'height="{height}"', f'height="{height + 24}"', 1)


def capacity_svg(levels: Sequence[dict[str, Any]], knee: int | None, budget: float | None,
                 width: int = 720, height: int = 240) -> str:
    """V2V p50 and p95 against concurrent callers, the budget and the knee."""
    pts = [(lv["calls"], lv["v2v"].get("p50_ms"), lv["v2v"].get("p95_ms"), lv.get("held")) for lv in levels]
    if not pts:
        return '<p class="muted">no ramp was run</p>'
    xs = [p[0] for p in pts]
    ys = [v for p in pts for v in p[1:3] if v is not None] + ([budget] if budget else [])
    x_hi, y_hi = float(max(xs)) * 1.05 + 0.5, float(max(ys) if ys else 1.0) * 1.1
    pad_l, pad_b, plot_w, plot_h = 50, 30, width - 70, height - 50

    def x(v: float) -> float:
        return pad_l + v / x_hi * plot_w

    def y(v: float) -> float:
        return 10 + plot_h - v / y_hi * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<line x1="{pad_l}" y1="{10 + plot_h}" x2="{pad_l + plot_w}" y2="{10 + plot_h}" stroke="#333"/>',
             f'<line x1="{pad_l}" y1="10" x2="{pad_l}" y2="{10 + plot_h}" stroke="#333"/>']
    for idx, colour, name in ((1, "#4e79a7", "p50"), (2, "#e15759", "p95")):
        line = [(x(p[0]), y(float(p[idx] or 0.0))) for p in pts if p[idx] is not None]
        if line:
            parts.append('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
                colour, " ".join(f"{a:.1f},{b:.1f}" for a, b in line)))
            for (a, b), p in zip(line, [p for p in pts if p[idx] is not None]):
                fill = colour if p[3] else "#fff"
                parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="4" fill="{fill}" stroke="{colour}">'
                             f'<title>{p[0]} callers: {name} {p[idx]:.0f} ms{"" if p[3] else " (failed)"}</title>'
                             f'</circle>')
            parts.append(f'<text x="{line[-1][0] + 6:.1f}" y="{line[-1][1]:.1f}">{name}</text>')
    if budget:
        parts.append(f'<line x1="{pad_l}" y1="{y(budget):.1f}" x2="{pad_l + plot_w}" y2="{y(budget):.1f}" '
                     f'stroke="#222" stroke-dasharray="4 3"/><text x="{pad_l + 4}" y="{y(budget) - 4:.1f}">'
                     f'budget {budget:.0f} ms</text>')
    if knee:
        parts.append(f'<line x1="{x(knee):.1f}" y1="10" x2="{x(knee):.1f}" y2="{10 + plot_h}" stroke="#59a14f" '
                     f'stroke-width="2"/><text x="{x(knee) + 4:.1f}" y="24">knee {knee}</text>')
    for c in sorted(set(xs)):
        parts.append(f'<text x="{x(c):.1f}" y="{height - 10}" text-anchor="middle">{c}</text>')
    for k in range(5):
        v = k * y_hi / 4
        parts.append(f'<text x="{pad_l - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    parts.append(f'<text x="{pad_l + plot_w}" y="{height - 22}" text-anchor="end">concurrent callers</text>')
    parts.append("</svg>")
    return "".join(parts)


def _kpi(label: str, value: str) -> str:
    return f'<div class="kpi"><span class="muted">{_e(label)}</span><b>{_e(value)}</b></div>'


def _table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["<table><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{_e('–' if c is None else c)}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


def render(result: dict[str, Any]) -> str:
    v2v = result.get("v2v", {})
    barge = result.get("bargein", {})
    cough = result.get("cough", {})
    svc = result.get("service", {})
    rows = result.get("rows", [])
    budget = result.get("v2v_budget_ms")
    values = [r["v2v_ms"] for r in rows if r.get("v2v_ms") is not None]
    stop = barge.get("stop_ms", {})
    body = [
        f"<h1>voxline bench: {_e(result.get('transport'))}, {_e(result.get('calls'))} callers × "
        f"{_e(result.get('turns_per_call'))} turns</h1>",
        f'<p class="muted">service {_e(svc.get("version", "?"))} at {_e(svc.get("url", "?"))}'
        f'{" (started by the harness)" if svc.get("embedded") else ""}; agent {_e(result.get("agent"))}; '
        f'machine {_e(result.get("machine", {}).get("cpus"))} CPUs, load '
        f'{_e(result.get("machine", {}).get("load_avg"))}. Figures on a shared machine are noisy.</p>',
        _kpi("V2V p50", _ms(v2v.get("p50_ms"))), _kpi("V2V p95", _ms(v2v.get("p95_ms"))),
        _kpi("V2V p99", _ms(v2v.get("p99_ms"))),
        _kpi("answered", f"{result.get('answered', 0)}/{result.get('turns', 0)}"),
        _kpi("barge-in stop p50", _ms(stop.get("p50"))),
        _kpi("barged / stopped", f"{barge.get('n', 0)}/{barge.get('stopped', 0)}"),
        _kpi("cough: reply went on", f"{cough.get('continued', 0)}/{cough.get('n', 0)}"),
    ]
    if (result.get("heard") or {}).get("wer") is not None:
        body.append(_kpi("WER as heard", f"{result['heard']['wer'] * 100:.1f}%"))
    if "capacity" in result:
        body.append(_kpi("capacity knee", f"{result['capacity'].get('knee')} callers"))
    body += ["<h2>Voice-to-voice at the caller</h2>",
             "<p>From the end of the caller's speech in the audio it sent to the first reply audio it "
             "received (energy onset), per turn.</p>",
             histogram_svg(values, {"p50": v2v.get("p50_ms"), "p95": v2v.get("p95_ms"),
                                    "p99": v2v.get("p99_ms")}, budget=budget),
             _table(["", "n", "p50", "p95", "p99", "min", "max", "budget"],
                    [["V2V", v2v.get("n"), _ms(v2v.get("p50_ms")), _ms(v2v.get("p95_ms")), _ms(v2v.get("p99_ms")),
                      _ms(v2v.get("min_ms")), _ms(v2v.get("max_ms")), _ms(budget)]])]
    stages = result.get("stages", {})
    p50s = stages.get("p50_ms_after_speech_end", {})
    segs = (stages.get("budget_ms") or {}).get("segments", {})
    body += ["<h2>Where the time goes</h2>",
             "<p>The service's own marks for each turn (ms after the caller's speech ended), then the caller "
             "hearing the reply. Medians against the service's declared budgets:</p>",
             _table(["mark", "p50 after speech end", "segment budget"],
                    [[m, _ms(v), _ms(segs.get(m))] for m, v in p50s.items()]),
             waterfall_svg(rows)]
    body += ["<h2>Barge-in</h2>",
             "<p>The caller talks over a reply: the time from its speech onset until the reply audio stops "
             "arriving, and until the clear message (transports that have one); whether the agent then "
             "answers the new utterance. A cough over a reply must not stop it for good.</p>",
             _table(["", "n", "p50", "p95", "max"],
                    [["reply stopped after", stop.get("n"), _ms(stop.get("p50")), _ms(stop.get("p95")),
                      _ms(stop.get("max"))],
                     ["clear after", barge.get("clear_ms", {}).get("n"), _ms(barge.get("clear_ms", {}).get("p50")),
                      _ms(barge.get("clear_ms", {}).get("p95")), None],
                     ["answered the interruption", f"{barge.get('answered', 0)}/{barge.get('n', 0)}", None, None,
                      None]])]
    if "capacity" in result:
        cap = result["capacity"]
        body += ["<h2>Capacity</h2>",
                 f"<p>Callers added until V2V p95 exceeded its budget, audio gaps appeared or admission refused. "
                 f"Knee: <b>{_e(cap.get('knee'))}</b> callers; first failure at {_e(cap.get('first_failed'))}: "
                 f"{_e(cap.get('reason'))}.</p>",
                 capacity_svg(cap.get("levels", []), cap.get("knee"), cap.get("budget_v2v_ms")),
                 _table(["callers", "p50", "p95", "refused", "gaps", "held", "why not"],
                        [[lv["calls"], _ms(lv["v2v"].get("p50_ms")), _ms(lv["v2v"].get("p95_ms")), lv["refused"],
                          lv["gaps"], "yes" if lv["held"] else "no", "; ".join(lv["reasons"])]
                         for lv in cap.get("levels", [])])]
    if "understood" in result:
        u = result["understood"]
        body += ["<h2>Did the agent understand?</h2>",
                 f"<p>Replies transcribed back: {_e(u.get('matched'))} of {_e(u.get('checked'))} contained an "
                 "expected word.</p>",
                 _table(["call", "turn", "asked", "expected", "reply heard", "ok"],
                        [[x.get("call"), x.get("turn"), x.get("text"), ", ".join(x.get("expect", [])),
                          x.get("reply"), "yes" if x.get("ok") else "no"] for x in u.get("rows", [])])]
    heard = result.get("heard") or {}
    if heard.get("turns"):
        wer_text = "n/a" if heard.get("wer") is None else f"{heard['wer'] * 100:.1f}%"
        body += ["<h2>What the service heard</h2>",
                 f"<p>The caller's words against the service's final transcript of each turn: WER "
                 f"<b>{_e(wer_text)}</b> ({_e(heard.get('errors'))} errors in {_e(heard.get('words'))} words, "
                 f"{_e(heard.get('turns'))} turns, {_e(heard.get('unheard'))} with no transcript).</p>",
                 *([f"<p>By voice: {_e(', '.join(f'{v} {w * 100:.1f}%' for v, w in heard['by_voice'].items() if w is not None))}</p>"]
                   if heard.get("by_voice") else []),
                 _table(["call", "turn", "voice", "said", "heard"],
                        [[r.get("call"), r.get("turn"), r.get("voice", ""), r.get("text"), r.get("heard")]
                         for r in rows if r.get("text") and r.get("service_turn") is not None])]
    imp = result.get("impairment", {})
    if imp.get("loss") or imp.get("jitter_ms") or imp.get("reorder"):
        body += ["<h2>Impairment</h2>",
                 f"<p>Applied to what the caller sent: loss {imp.get('loss', 0) * 100:.1f}%, jitter up to "
                 f"{imp.get('jitter_ms', 0):.0f} ms, reordering {imp.get('reorder', 0) * 100:.1f}% "
                 f"({'applied' if imp.get('applied') else 'not possible on this transport'}).</p>"]
    body += ["<h2>Turns</h2>",
             _table(["call", "turn", "kind", "v2v", "stop", "clear", "answered", "service marks"],
                    [[r.get("call"), r.get("turn"), r.get("kind"), _ms(r.get("v2v_ms")),
                      _ms((r.get("bargein") or {}).get("stop_ms")), _ms((r.get("bargein") or {}).get("clear_ms")),
                      "yes" if r.get("answered") else "no",
                      " ".join(f"{k}={v:.0f}" for k, v in r.get("stages_ms", {}).items())] for r in rows])]
    if result.get("errors"):
        body += ["<h2>Errors</h2>", "<ul>", *(f"<li>{_e(e)}</li>" for e in result["errors"]), "</ul>"]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>voxline bench</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
