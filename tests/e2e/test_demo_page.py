"""The demo page end to end: ``voxline serve`` in a subprocess, headless Chromium with
a WAV as its microphone, Playwright pressing the page's buttons.

Everything runs in a network namespace with only ``lo`` (see conftest.py). What the
page hears is recorded in the page itself next to what it sends (recorder.js), so
the measures are sample-aligned. Delays and correlations are printed (``-s``); the
assertions are on behaviour and content, never on time: deadlines only bound the
waits.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ..transports.probe import Pcm, echo_delays, probe_signal, windowed_match, write_wav
from .conftest import OUT, Browser, Service

READY_ECHO = 30.0  # s: the echo service loads only the VAD
READY_MODELS = 180.0  # s: the assistant loads whisper, the LLM and Piper before it is ready
DEADLINE = 20.0  # s for a page step (connect, stop)
REPLY_DEADLINE = 90.0  # s from the question to the reply's latency waterfall (first inference is slow)
RATE = 48000

# Echo fidelity. r is the normalised correlation of a 250 ms window of what came
# back with what was sent at the best delay (up to 1 s). r^2 is the share of the
# window's energy that the sent signal explains, so r >= 0.8 says at least 64% of
# what came back is the sent signal (signal-to-distortion >= 2.5 dB after two Opus
# codings, 48 -> 16 -> 48 kHz, the jitter buffer's time-stretching). The median is
# taken over windows, as in the transport test. And the windows must agree on the
# delay: a chance match (a tone burst resembles any burst of the same pitch) lands
# on an arbitrary lag, the real echo on the same one for every window.
MIN_ECHO_CORRELATION = 0.8
DELAY_AGREEMENT = 0.05  # s: windows whose delay is within this of the median agree
MIN_AGREEING = 0.8  # share of the windows that must agree

QUESTION = "What is the capital of France?"
LEAD_SILENCE = 5.0  # s before the question: the page connects and the greeting plays
TAIL_SILENCE = 12.0  # s after it: Chromium loops the file; the reply must end before it repeats


# -- page helpers -----------------------------------------------------------------------


def state(b: Browser) -> dict[str, Any]:
    return b.page.evaluate("() => window.voxline && { ...window.voxline.state }")  # type: ignore[no-any-return]


def diagnostics(b: Browser, svc: Service) -> str:
    from playwright.sync_api import Error as PlaywrightError

    try:
        vx = b.page.evaluate(
            "() => ({state: window.voxline.state, transcripts: window.voxline.transcripts,"
            " turns: window.voxline.turns, events: window.voxline.events.slice(-25)})"
        )
        page = json.dumps(vx, indent=1)[:6000]
    except PlaywrightError as exc:  # the page itself may be what broke
        page = f"(page state unavailable: {exc})"
    return f"page: {page}\n{b.diagnostics()}\nservice log:\n{svc.log_tail()}"


def wait_js(b: Browser, svc: Service, predicate: str, timeout: float, what: str) -> None:
    """Wait until the page's ``predicate`` (a JS expression) is true; fail with everything known."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        b.page.wait_for_function(predicate, timeout=timeout * 1000, polling=100)
    except PlaywrightTimeout:
        pytest.fail(f"{what}: not within {timeout:.0f} s\n{diagnostics(b, svc)}")


def open_demo(b: Browser, svc: Service, agent: str) -> None:
    b.page.goto(svc.url)
    wait_js(b, svc, f"document.querySelector('#agent option[value=\"{agent}\"]') !== null", DEADLINE,
            f"the agent picker offering {agent!r}")
    b.page.select_option("#agent", agent)
    assert state(b)["status"] == "idle"


def start_call(b: Browser, svc: Service) -> str:
    """Press start; wait for live, the remote track and the transport's 'connected'. The session id."""
    b.page.click("#start")
    wait_js(b, svc, "['live', 'error', 'ended'].includes(window.voxline.state.status)", DEADLINE, "status live")
    s = state(b)
    assert s["status"] == "live", f"the page did not go live: {s}\n{diagnostics(b, svc)}"
    wait_js(
        b, svc,
        "window.voxline.state.remoteAudio && window.voxline.events.some("
        "(e) => e.kind === 'transport' && e.data && e.data.state === 'connected')",
        DEADLINE, "the media connection",
    )
    session_id = state(b)["sessionId"]
    assert session_id and b.page.text_content("#session-id") == session_id
    status, listed = svc.get("/v1/sessions")
    assert status == 200
    mine = [x for x in listed["sessions"] if x["id"] == session_id]
    assert mine and mine[0]["state"] == "active" and mine[0]["agent"] == svc.agent, listed
    return str(session_id)


def stop_call(b: Browser, svc: Service, session_id: str) -> None:
    """Press stop: the page says ended and the service has no session left."""
    b.page.click("#stop")
    wait_js(b, svc, "window.voxline.state.status === 'ended'", DEADLINE, "status ended after stop")
    assert b.page.text_content("#status") == "ended"
    assert b.page.is_enabled("#start") and b.page.is_disabled("#stop")
    for _ in range(int(DEADLINE / 0.2)):
        status, listed = svc.get("/v1/sessions")
        if status == 200 and not listed["sessions"]:
            break
        b.page.wait_for_timeout(200)
    else:
        pytest.fail(f"session {session_id} still listed after stop: {listed}\n{svc.log_tail()}")
    status, gone = svc.get(f"/v1/sessions/{session_id}")
    assert status == 404, gone


def record(b: Browser, svc: Service) -> None:
    rate = b.page.evaluate("() => window.__e2e.start()")
    assert rate == RATE, f"the recorder runs at {rate} Hz"


def recorded_seconds(b: Browser) -> float:
    return float(b.page.evaluate("() => window.__e2e.seconds()"))


def take(b: Browser) -> tuple[Pcm, Pcm]:
    """Stop recording: (mic, remote) as int16 at 48 kHz, sample-aligned."""
    got = b.page.evaluate("() => window.__e2e.take()")
    assert got["rate"] == RATE
    both = np.frombuffer(base64.b64decode(got["pcm"]), dtype=np.int16).reshape(-1, 2)
    return both[:, 0].copy(), both[:, 1].copy()


def rms_frames(pcm: Pcm, rate: int, frame: float = 0.05) -> np.ndarray:
    n = int(rate * frame)
    usable = len(pcm) // n * n
    x = pcm[:usable].astype(np.float64).reshape(-1, n)
    out: np.ndarray = np.sqrt(np.mean(x * x, axis=1))
    return out


def timeline(events: list[dict[str, Any]]) -> str:
    """The session's events as the page received them, one line each (for -s)."""
    t0 = events[0]["time"] if events else 0.0
    lines = [f"  {e['time'] - t0:6.2f} s  turn {e['turn']}  {e['kind']:<10} {json.dumps(e.get('data'))[:150]}"
             for e in events]
    return "\nevents the page received:\n" + "\n".join(lines)


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


# -- echo -----------------------------------------------------------------------------------


def test_echo_agent_sends_back_what_the_browser_sent(service: Any, browser: Any, tmp_path: Path) -> None:
    sent = probe_signal(RATE)  # 2 s: a chirp, then tone bursts; Chromium loops it
    wav = tmp_path / "probe.wav"
    write_wav(wav, sent, RATE)
    svc: Service = service("echo", READY_ECHO)
    b: Browser = browser(wav)

    open_demo(b, svc, "echo")
    session_id = start_call(b, svc)
    record(b, svc)
    wait_js(b, svc, "window.__e2e.seconds() >= 6", DEADLINE, "6 s of recording")
    mic, heard = take(b)

    delays = echo_delays(mic, heard, RATE)  # per 250 ms window: (delay, correlation) vs the mic up to 1 s back
    assert len(delays) >= 8, f"the page heard almost no echo ({len(delays)} loud windows)\n{diagnostics(b, svc)}"
    d = np.array([x for x, _ in delays])
    c = np.array([y for _, y in delays])
    median_delay, median_corr = float(np.median(d)), float(np.median(c))
    agreeing = float(np.mean(np.abs(d - median_delay) <= DELAY_AGREEMENT))
    mic_vs_wav = windowed_match(mic[-2 * RATE :], sent, RATE)
    heard_vs_wav = windowed_match(heard[-2 * RATE :], sent, RATE)
    print(
        f"\necho through the demo page (session {session_id}, {len(delays)} windows of 250 ms):"
        f"\n  round trip delay median {median_delay * 1000:.0f} ms"
        f" (min {d.min() * 1000:.0f}, max {d.max() * 1000:.0f}; {agreeing:.0%} within"
        f" {DELAY_AGREEMENT * 1000:.0f} ms of the median)"
        f"\n  correlation heard vs sent: median {median_corr:.3f} (min {c.min():.3f}, max {c.max():.3f})"
        f"\n  for reference: the page's mic vs the WAV {mic_vs_wav:.3f}, what it heard vs the WAV {heard_vs_wav:.3f}"
    )
    assert median_corr >= MIN_ECHO_CORRELATION, (
        f"what came back does not match what the browser sent: median correlation {median_corr:.3f}"
    )
    assert median_delay >= 0.02, f"the echo is not delayed ({median_delay * 1000:.1f} ms): the page heard its own mic"
    assert agreeing >= MIN_AGREEING, f"the windows disagree on the delay: {[round(x, 3) for x in d]}"

    status, detail = svc.get(f"/v1/sessions/{session_id}")
    assert status == 200 and detail["agent"] == "echo" and detail["transport"] == "webrtc"

    stop_call(b, svc, session_id)
    assert svc.stop() == 0, f"the service did not shut down cleanly:\n{svc.log_tail()}"


# -- the assistant on the embedded models ------------------------------------------------


def question_wav(tmp_path: Path) -> tuple[Path, float]:
    """The question in espeak-ng's voice at 48 kHz mono, with silence around it; its length in s."""
    for tool, package in (("espeak-ng", "espeak-ng"), ("sox", "sox")):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: install it with `apt-get install {package}`")
    raw, wav = tmp_path / "question-22k.wav", tmp_path / "question.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), QUESTION], check=True, timeout=30)
    subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(wav),
                    "pad", str(LEAD_SILENCE), str(TAIL_SILENCE)], check=True, timeout=30)
    spoken = float(subprocess.run(["soxi", "-D", str(raw)], check=True, timeout=30, capture_output=True,
                                  text=True).stdout)
    return wav, spoken


@pytest.mark.slow
def test_assistant_answers_a_spoken_question_in_the_demo_page(service: Any, browser: Any, tmp_path: Path) -> None:
    wav, spoken = question_wav(tmp_path)
    svc: Service = service("assistant", READY_MODELS)
    b: Browser = browser(wav)

    open_demo(b, svc, "assistant")
    session_id = start_call(b, svc)
    record(b, svc)

    # The caller's words, as the page shows them.
    wait_js(
        b, svc,
        "window.voxline.transcripts.some((t) => t.who === 'caller' && t.final"
        " && /capital/i.test(t.text) && /france/i.test(t.text))",
        REPLY_DEADLINE, "the question in the transcript",
    )
    vx = b.page.evaluate("() => ({transcripts: window.voxline.transcripts, turns: window.voxline.turns})")
    asked = next(t for t in vx["transcripts"] if t["who"] == "caller" and t["final"]
                 and {"capital", "france"} <= set(words(t["text"])))
    turn = asked["turn"]
    caller_li = b.page.locator(f'#transcript li[data-who="caller"][data-turn="{turn}"]')
    assert {"capital", "france"} <= set(words(caller_li.inner_text())), "the question is not shown in #transcript"

    # The reply turn is over once the latency event arrives (the reply has been played out).
    wait_js(b, svc, f"window.voxline.turns.some((t) => t.turn === {turn})", REPLY_DEADLINE,
            f"the latency of turn {turn}")
    seconds = recorded_seconds(b)
    mic, heard = take(b)
    vx = b.page.evaluate("() => ({transcripts: window.voxline.transcripts, turns: window.voxline.turns,"
                         " events: window.voxline.events})")
    print(timeline(vx["events"]))

    # An agent reply to that turn, in the page's transcript.
    replies = [t for t in vx["transcripts"] if t["who"] == "agent" and t["turn"] == turn and t["text"].strip()]
    assert replies, f"no agent reply for turn {turn}: {vx['transcripts']}"
    reply = replies[-1]["text"]
    agent_li = b.page.locator(f'#transcript li[data-who="agent"][data-turn="{turn}"]')
    assert agent_li.count() >= 1 and agent_li.last.inner_text().strip() == reply.strip()

    # Reply audio reached the browser after the question ended. The question is found
    # in the mic channel (the recording holds both, sample-aligned): the longest run of
    # loud 50 ms frames, allowing the short gaps between words.
    frame = 0.05
    mic_rms, heard_rms = rms_frames(mic, RATE, frame), rms_frames(heard, RATE, frame)
    loud = mic_rms > 300  # about -40 dBFS
    assert loud.any(), "the recording holds no microphone audio"
    runs = _runs(loud, gap=int(0.4 / frame))
    q_start, q_end = max(runs, key=lambda r: r[1] - r[0])
    q_len = (q_end - q_start) * frame
    assert abs(q_len - spoken) < 1.0, f"the loudest run in the mic ({q_len:.2f} s) is not the question ({spoken:.2f} s)"
    after = heard_rms[q_end:]
    voiced = float(np.sum(after > 300) * frame)
    before = float(np.sum(heard_rms[:q_start] > 300) * frame)
    print(
        f"\nassistant (session {session_id}, turn {turn}): recorded {seconds:.1f} s;"
        f" question in the mic at {q_start * frame:.2f}-{q_end * frame:.2f} s"
        f"\n  caller: {asked['text']!r}\n  agent:  {reply!r}"
        f"\n  remote audio above -40 dBFS: {before:.2f} s before the question (greeting), {voiced:.2f} s after it;"
        f" peak after {20 * np.log10(max(after.max(initial=0.0), 1.0) / 32768):.1f} dBFS"
    )
    assert voiced >= 0.5, f"no reply audio reached the browser after the question ({voiced:.2f} s voiced)"

    # The latency waterfall for that turn: an article under #turns with its bars.
    t = next(x for x in vx["turns"] if x["turn"] == turn)
    box = b.page.locator(f'#turns article.turn[data-turn="{turn}"]')
    assert box.count() == 1 and box.is_visible(), f"no waterfall for turn {turn}"
    assert box.locator("h3").inner_text().startswith(f"Turn {turn}")
    rows = box.locator(".segment")
    marks = [rows.nth(i).get_attribute("data-mark") for i in range(rows.count())]
    expected = [k for k in ("vad_end", "transcript", "first_token", "first_sentence", "first_tts_audio",
                            "first_played") if isinstance(t.get("marks", {}).get(k), (int, float))]
    print(f"  waterfall turn {turn}: marks {t.get('marks')}, rows {marks}, voice to voice {t.get('voice_to_voice_ms')} ms")
    assert len(marks) >= 3 and {"transcript", "first_token"} <= set(marks), f"waterfall rows {marks}, turn {t}"
    assert set(marks) <= set(expected), f"rows {marks} for marks {t.get('marks')}"
    for i in range(rows.count()):
        bar = rows.nth(i).locator(".bar").bounding_box()
        track = rows.nth(i).locator(".track").bounding_box()
        assert bar and track and bar["width"] > 0 and bar["height"] > 0, f"row {marks[i]} has no visible bar"
        assert track["x"] - 0.5 <= bar["x"] and bar["x"] + bar["width"] <= track["x"] + track["width"] + 0.5
        assert re.fullmatch(r"\d+ ms", rows.nth(i).locator(".ms").inner_text()), "each bar says its duration"

    OUT.mkdir(parents=True, exist_ok=True)
    shot = OUT / "demo_page.png"
    b.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"  screenshot: {shot}")

    stop_call(b, svc, session_id)
    assert svc.stop() == 0, f"the service did not shut down cleanly:\n{svc.log_tail()}"


def _runs(mask: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """[start, end) runs of True in ``mask``, merging runs separated by at most ``gap`` False."""
    runs: list[tuple[int, int]] = []
    idx = np.flatnonzero(mask)
    for i in idx:
        if runs and i - runs[-1][1] <= gap:
            runs[-1] = (runs[-1][0], int(i) + 1)
        else:
            runs.append((int(i), int(i) + 1))
    return runs
