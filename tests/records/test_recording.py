"""A recorded call over the raw stream (echo agent): a stereo WAV with the
caller on the left and what the caller heard on the right, served with HTTP
range requests, deleted with the record."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import soundfile as sf

from ..transports.probe import probe_signal, windowed_match
from ..transports.streams.helpers import TOKEN, eventually, make_app, only_session
from .helpers import RATE, RawCaller, records_config, settled

__all__ = ["make_app"]

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def best_match(x: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    """Where ``ref`` sits in ``x`` (its best lag) and the correlation there."""
    a, b = x.astype(np.float64), ref.astype(np.float64)
    n = len(a) + len(b)
    xc = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)[: len(a) - len(b) + 1]
    lag = int(np.argmax(xc))
    seg = a[lag : lag + len(b)]
    return lag, float(np.dot(seg, b) / (np.linalg.norm(seg) * np.linalg.norm(b) + 1e-9))


async def test_a_recorded_call_holds_both_sides_and_is_served_in_ranges(make_app, tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(records_config(f"sqlite:///{tmp_path / 'calls.db'}", str(tmp_path), record=True))
    caller = await RawCaller.dial(app)
    session = await only_session(app)
    await caller.speak(2.0)
    await eventually(lambda: caller.heard_bytes() >= 2 * RATE * 2, what="the whole echo")
    await asyncio.sleep(0.3)  # the call goes on a little after it
    await caller.hang_up()
    await eventually(lambda: session.ended_at is not None, what="the end")
    await settled(app)
    duration = session.ended_at - session.created_at  # type: ignore[operator]

    r = await app.client.get(f"/v1/calls/{session.id}/recording", headers=AUTH)
    assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
    body = await r.read()
    pcm, rate = sf.read(io.BytesIO(body), dtype="int16")
    assert rate == RATE and pcm.shape[1] == 2
    assert 2.0 <= len(pcm) / RATE <= duration + 0.1
    sig = probe_signal(RATE, 2.0)
    caller_lag, caller_corr = best_match(pcm[:, 0], sig)
    assert caller_corr > 0.9, caller_corr  # the caller, left, as sent
    # Right: what the caller heard. The echo is played as it comes back, with the
    # gaps playout had (so each window is matched on its own, as in test_raw).
    agent = pcm[:, 1]
    onset = int(np.argmax(np.abs(agent.astype(np.int32)) > 500))
    assert 0 <= onset - caller_lag < RATE // 2  # after the caller's words, not long after
    heard = agent[onset : onset + 2 * RATE]
    assert windowed_match(heard, sig, RATE) > 0.7

    r = await app.client.get(f"/v1/calls/{session.id}/recording", headers={**AUTH, "Range": "bytes=0-43"})
    assert r.status == 206 and await r.read() == body[:44]
    r = await app.client.get(f"/v1/calls/{session.id}/recording", headers={**AUTH, "Range": "bytes=1000-"})
    assert r.status == 206 and await r.read() == body[1000:]
    r = await app.client.get(f"/v1/calls/{session.id}/recording",
                             headers={**AUTH, "Range": f"bytes={len(body) + 10}-"})
    assert r.status == 416

    path = tmp_path / "recordings" / f"{session.id}.wav"
    assert path.is_file()
    r = await app.client.delete(f"/v1/calls/{session.id}", headers=AUTH)
    assert r.status == 204 and not path.exists()
    r = await app.client.get(f"/v1/calls/{session.id}/recording", headers=AUTH)
    assert r.status == 404


async def test_an_unrecorded_call_has_no_recording(make_app, tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = await make_app(records_config(f"sqlite:///{tmp_path / 'calls.db'}", str(tmp_path)))
    caller = await RawCaller.dial(app)
    session = await only_session(app)
    await caller.hang_up()
    await eventually(lambda: session.ended_at is not None, what="the end")
    await settled(app)
    r = await app.client.get(f"/v1/calls/{session.id}/recording", headers=AUTH)
    assert r.status == 404 and (await r.json())["error"]["message"].endswith("has no recording")
    assert not (tmp_path / "recordings").exists()


async def test_a_narrowband_call_is_recorded_at_its_wire_rate(make_app, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # 8 kHz on the wire: recorded at 8 kHz, the caller's side as it crossed the wire
    # (before the service resampled it), the agent's as it was sent: nothing resampled.
    narrow = 8000
    app = await make_app(records_config(f"sqlite:///{tmp_path / 'calls.db'}", str(tmp_path), record=True))
    caller = await RawCaller.dial(app, rate=narrow)
    session = await only_session(app)
    await caller.speak(2.0)
    await eventually(lambda: caller.heard_bytes() >= 2 * narrow * 2, what="the whole echo")
    await caller.hang_up()
    await eventually(lambda: session.ended_at is not None, what="the end")
    await settled(app)
    pcm, rate = sf.read(tmp_path / "recordings" / f"{session.id}.wav", dtype="int16")
    assert rate == narrow and pcm.shape[1] == 2
    sig = probe_signal(narrow, 2.0)
    caller_lag, caller_corr = best_match(pcm[:, 0], sig)
    assert caller_corr > 0.99, caller_corr  # the very samples sent
    agent = pcm[:, 1]
    onset = int(np.argmax(np.abs(agent.astype(np.int32)) > 500))
    assert 0 <= onset - caller_lag < narrow // 2
    assert windowed_match(agent[onset : onset + 2 * narrow], sig, narrow) > 0.7
