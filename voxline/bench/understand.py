"""Did the agent understand? Each reply the caller heard, transcribed back with
the service's own whisper provider, searched for the words the script expects."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import numpy as np

from voxline.media.resample import resample_chunk

from .script import Turn

__all__ = ["check_replies", "transcribe"]

RATE = 16000
MAX_REPLY = 12.0  # s of a reply transcribed


async def transcribe(stt: Any, pcm: np.ndarray) -> str:
    rec = await stt.open()
    texts: list[str] = []
    final = asyncio.Event()

    async def read() -> None:
        async for r in rec.results():
            if r.final:
                texts.append(r.text)
                final.set()

    reader = asyncio.ensure_future(read())
    try:
        for i in range(0, len(pcm), 320):
            await rec.send(pcm[i : i + 320])
        await rec.finalize()
        await asyncio.wait_for(final.wait(), 60)  # closing first would cancel the final decode
    except TimeoutError:
        pass
    finally:
        await asyncio.wait_for(rec.aclose(), 30)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return " ".join(t.strip() for t in texts).strip()


def _reply_audio(capture: list[tuple[float, int, np.ndarray]], start: float, end: float) -> np.ndarray:
    parts = []
    for arrival, rate, pcm in capture:
        if start - 0.02 <= arrival <= min(end, start + MAX_REPLY):
            parts.append(pcm if rate == RATE else resample_chunk(pcm, rate, RATE).astype(np.int16))
    return np.concatenate(parts) if parts else np.zeros(0, np.int16)


async def check_replies(results: list[dict[str, Any]], turns: list[Turn]) -> dict[str, Any]:
    from voxline.providers.stt.whisper import WhisperSTT

    stt = WhisperSTT()
    await stt.load()
    rows = []
    for res in results:
        capture = res.get("_capture") or []
        for row in res["rows"]:
            turn = turns[row["turn"] - 1]
            span = row.get("reply_audio")
            if not turn.expect or span is None:
                continue
            text = await transcribe(stt, _reply_audio(capture, span[0], span[1]))
            words = set(re.findall(r"[a-z0-9]+", text.lower()))
            ok = any(w in words for w in turn.expect)
            rows.append({"call": res["call"], "turn": row["turn"], "text": turn.text, "expect": list(turn.expect),
                         "reply": text, "ok": ok})
            row["understood"] = ok
    return {"checked": len(rows), "matched": sum(1 for r in rows if r["ok"]), "rows": rows}
