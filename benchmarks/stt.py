"""STT: whisper's decode time and word error rate, short window against 30 s.

Real speech with reference transcripts: the five LibriVox sentences of
``pocketsphinx-testdata`` (3-7 s each), the same joined in pairs (8-13 s), and
the V2V benchmark's twelve questions synthesised with Piper (1-3 s). Each clip
is decoded by ``WhisperSTT`` with ``window_seconds`` at its default (10 s) and
with ``None`` (whisper's 30 s on every turn), each with beam search (5, the
default) and greedy, ``--repeat`` times each; the
figures are the median decode time per clip and the word error rate against
the reference (numbers written as words; punctuation and case ignored).

    python -m benchmarks.stt [--repeat 3] [--cpu 0]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import re
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from voxline.providers.stt.whisper import WhisperConfig, WhisperSTT

from .common import new_parser, run_main
from .v2v import QUESTIONS

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
NUMBERS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "7": "seven", "8": "eight",
           "10": "ten", "60": "sixty", "mr": "mister"}  # fmt: skip


def words(text: str) -> list[str]:
    text = text.lower().replace("-", " ").replace("colour", "color")
    return [NUMBERS.get(w, w) for w in re.findall(r"[a-z0-9']+", text)]


def errors(ref: list[str], hyp: list[str]) -> int:
    """Word-level edit distance."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)]


def librivox() -> list[tuple[str, str, np.ndarray]]:
    refs = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        text, _, name = line.rpartition("(")
        refs[name.strip(" )")] = text.replace("<s>", "").replace("</s>", "").strip()
    clips = []
    for name in sorted(refs):
        audio, rate = sf.read(LIBRIVOX / f"{name}.wav", dtype="int16")
        assert rate == 16000
        clips.append((name[-4:], refs[name], np.asarray(audio, np.int16)))
    pairs = [(f"{a[0]}+{b[0]}", f"{a[1]} {b[1]}", np.concatenate([a[2], b[2]])) for a, b in itertools.pairwise(clips)]
    return clips + pairs


async def questions() -> list[tuple[str, str, np.ndarray]]:
    from voxline.providers.tts.piper import PiperTTS

    tts = PiperTTS()
    out = []
    for q in QUESTIONS:
        pcm = np.concatenate([c async for c in tts.synthesize(q)])
        audio = np.clip(np.round(soxr.resample(pcm.astype(np.float32), tts.sample_rate, 16000)), -32768, 32767)
        out.append((q, q, audio.astype(np.int16)))
    return out


async def decode(stt: WhisperSTT, audio: np.ndarray) -> tuple[str, float]:
    rec = await stt.open()
    try:
        await rec.send(audio)
        started = time.perf_counter()
        await rec.finalize()
        result = await anext(aiter(rec.results()))
        return result.text, time.perf_counter() - started
    finally:
        await rec.aclose()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sets = {"librivox": librivox(), "questions": await questions()}
    modes = {
        "window_10s_beam5": WhisperSTT(),  # the default
        "full_30s_beam5": WhisperSTT(WhisperConfig(window_seconds=None)),
        "window_10s_greedy": WhisperSTT(WhisperConfig(beam_size=1)),
        "full_30s_greedy": WhisperSTT(WhisperConfig(window_seconds=None, beam_size=1)),
    }
    for stt in modes.values():
        await decode(stt, sets["questions"][0][2])  # load and warm
    out: dict[str, Any] = {"benchmark": "stt", "repeat": args.repeat}
    for set_name, clips in sets.items():
        for mode, stt in modes.items():
            times, errs, total, diffs = [], 0, 0, []
            for name, ref, audio in clips:
                runs = [await decode(stt, audio) for _ in range(args.repeat)]
                times.append(statistics.median(t for _, t in runs))
                text = runs[0][0]
                e = errors(words(ref), words(text))
                errs += e
                total += len(words(ref))
                if e:
                    diffs.append({"clip": name, "heard": text})
            out[f"{set_name}/{mode}"] = {
                "clips": len(clips),
                "seconds_of_audio": round(sum(len(a) for *_, a in clips) / 16000, 1),
                "decode_ms_p50": round(statistics.median(times) * 1000, 1),
                "decode_ms_max": round(max(times) * 1000, 1),
                "wer_pct": round(100 * errs / total, 2),
                "word_errors": errs,
                "words": total,
                "misheard": diffs,
            }
            print(f"{set_name:10s} {mode:16s} decode p50 {out[f'{set_name}/{mode}']['decode_ms_p50']:6.1f} ms  "
                  f"WER {out[f'{set_name}/{mode}']['wer_pct']:5.2f}% ({errs}/{total})", flush=True)
    out["stats"] = {mode: stt.stats for mode, stt in modes.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = new_parser("stt", __doc__)
    parser.add_argument("--repeat", type=int, default=3)
    run_main(parser, main_async, argv)


if __name__ == "__main__":
    main()
