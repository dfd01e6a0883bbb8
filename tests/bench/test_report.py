"""The report renders from a stored result, self-contained; ``compare`` sets two
results side by side; the command line runs the harness end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from voxline.bench.compare import compare
from voxline.bench.report import capacity_svg, histogram_svg, render, waterfall_svg
from voxline.bench.run import write_result
from voxline.cli import main

STORED = Path(__file__).parent / "data" / "result.json"


def stored() -> dict[str, Any]:
    return json.loads(STORED.read_text())


def test_the_report_renders_from_a_stored_result_with_no_network(tmp_path: Path) -> None:
    result = stored()
    html = render(result)
    assert html.startswith("<!DOCTYPE html>") and html.endswith("</html>")
    # Self-contained: nothing fetched (no src/href to anywhere, no script, no external CSS).
    assert not re.search(r"""(src|href)\s*=""", html, re.I)
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html
    assert html.count("<svg") >= 3  # the distribution, the waterfall, the capacity curve
    assert f"{result['v2v']['p50_ms']:.0f} ms" in html
    assert f"knee {result['capacity']['knee']}" in html
    for row in result["rows"]:
        assert f"call {row['call']} turn {row['turn']}" in html  # a waterfall row per turn
    js, page = write_result(result, tmp_path / "out")
    assert json.loads(js.read_text())["v2v"] == result["v2v"] and page.read_text() == html


def test_the_stored_result_has_the_figures_promised() -> None:
    result = stored()
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        assert isinstance(result["v2v"][key], float)
    assert isinstance(result["bargein"]["stop_ms"]["p50"], float)
    assert result["turns"] >= result["answered"] > 0
    assert result["transport"] == "raw" and result["service"]["version"]
    assert "config" in result["service"] and isinstance(result["capacity"]["knee"], int)


def test_charts_with_nothing_to_draw_say_so() -> None:
    assert "no turns" in histogram_svg([], {})
    assert "no answered" in waterfall_svg([{"v2v_ms": None}])
    assert "no ramp" in capacity_svg([], None, None)


def test_compare_prints_both_runs_and_their_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = stored()
    b = json.loads(json.dumps(a))
    b["v2v"]["p50_ms"] = a["v2v"]["p50_ms"] * 2
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    text = compare(pa, pb)
    line = next(x for x in text.splitlines() if x.startswith("V2V p50"))
    assert line.split()[-1] == "2.00"
    assert main(["bench", "compare", str(pa), str(pb)]) == 0
    assert "V2V p95" in capsys.readouterr().out
    assert main(["bench", "compare", str(pa)]) == 2


def test_the_command_runs_the_harness_and_writes_the_result(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["bench", "--transport", "raw", "--agent", "delay", "--turns", "3", "--no-progress",
                 "--loss", "2%", "--jitter", "10ms", "--out", str(out)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["answered"] == 3 and summary["transport"] == "raw"
    result = json.loads((out / "result.json").read_text())
    assert result["impairment"] == {"loss": 0.02, "jitter_ms": 10.0, "reorder": 0.0, "applied": True}
    assert result["wire"][0]["impaired"] and "<svg" in (out / "report.html").read_text()
    assert main(["bench", "--transport", "inprocess", "--url", "http://127.0.0.1:1"]) == 2
