"""Q: conversation quality of the embedded default, offline, through the service's own parts.

Four parts, each printed as it goes; the last line printed is one JSON object.

- **wer**: word error rate of the service's recogniser on real recorded speech
  (``pocketsphinx-testdata``: the five LibriVox sentences, the five "cards"
  utterances, "go forward ten meters") and on the questions below spoken by
  several synthetic voices (Piper joe, espeak-ng en-us, espeak-ng en-us+f3), each
  at 16 kHz and through the phone path: 16 kHz -> 8 kHz, G.711 µ-law encode
  and decode (voxline's codec), -> 16 kHz (voxline's resampler).
- **answers**: each question, in each voice, at both rates, asked in a call of
  its own through the service's pipeline (Silero VAD, the turn machine, the
  recogniser, the LLM; in process, fed frame by frame), and the reply's text
  searched for the words expected. ``--speed`` feeds the caller's frames faster
  than real time (the VAD and the turn machine work on the audio's own clock;
  what they decide does not change).
- **hallucination**: 60 s each of silence, line noise (hiss and hum), tones
  (ring-back and a melody of chords) and the bot's own voice coming back down
  the line (a call that greets, whose every reply audio is fed back to it as the
  caller's audio, 100 ms late and 6 dB down): the caller turns the service
  heard and would answer, which should be none, and the ones its guard rejected.
- **turns**: questions with a pause of 0.3-0.8 s mid-sentence, in real time:
  a false cut-off is a reply heard before the caller finished, or a reply to
  the first half only; and voice-to-voice for each, from the end of the
  caller's speech to the first reply audio.
- **turn_model**: Smart Turn v3.2's verdicts offline: "complete" at the end of
  each question (every voice, both rates), "incomplete" at the pause of each
  paused question, and the CPU time of a verdict.
- **llm** (alone: ``--parts llm --llm-models a,b``): each LLM on the questions
  as text, with the service's system prompt and sampling: right answers, time
  to the first token and to the whole answer.

    python -m benchmarks.quality [--parts wer,answers,hallucination,turns]
        [--stt-model tiny.en] [--beam 5] [--llm-model ...] [--speed 2]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from voxline.bench.understand import transcribe
from voxline.codecs import ulaw_decode, ulaw_encode
from voxline.config import load_config
from voxline.control.runtime import Runtime
from voxline.control.session import SessionRegistry
from voxline.media.frames import Audio, Frame
from voxline.media.resample import resample_chunk
from voxline.providers.base import ProviderError

from .common import new_parser, run_main
from .stt import errors, librivox
from .v2v import FRAME, ONSET, RATE, InProcess

__all__ = ["QUESTIONS", "PAUSED", "VOICES", "phone", "words", "answered", "main"]

SPHINX = Path("/usr/share/pocketsphinx/test/data")
PHONE_RATE = 8000
PARTS = ("wer", "answers", "hallucination", "turns", "turn_model")  # and "llm" alone: the LLMs on text

# Short spoken questions and the words a right answer contains (any one).
QUESTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("paris",)),
    ("How many days are there in a week?", ("seven",)),
    ("What is two plus two?", ("four",)),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("How many legs does a spider have?", ("eight",)),
    ("What do bees make?", ("honey",)),
    ("Which ocean is the biggest?", ("pacific",)),
    ("How many minutes are in an hour?", ("sixty",)),
    ("Which animal says meow?", ("cat", "cats", "kitten")),
    ("What colour is grass?", ("green",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("How many hours are in a day?", ("twenty", "twentyfour")),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("What do cows drink?", ("water",)),
    ("What is frozen water called?", ("ice",)),
    ("How many months are in a year?", ("twelve",)),
    ("What is the opposite of hot?", ("cold",)),
    ("Which planet do we live on?", ("earth",)),
    ("What is the capital of Italy?", ("rome",)),
    ("How many sides does a triangle have?", ("three",)),
    ("What is ten minus three?", ("seven",)),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What gas do people breathe in to live?", ("oxygen",)),
    ("Which animal is known as the king of the jungle?", ("lion", "lions")),
    ("What is the capital of England?", ("london",)),
    ("How many wheels does a bicycle have?", ("two",)),
    ("What is the first month of the year?", ("january",)),
    ("What do you call a baby dog?", ("puppy", "puppies")),
    ("Which star is at the centre of our solar system?", ("sun",)),
    ("What is five times two?", ("ten",)),
    ("What fruit is yellow and curved?", ("banana", "bananas")),
    ("In which country are the pyramids of Giza?", ("egypt",)),
)

# A question said in two parts with a pause between them, and a word of the second part.
PAUSED: tuple[tuple[str, str, str], ...] = (
    ("What is the capital", "of Germany?", "germany"),
    ("How many legs", "does a cat have?", "cat"),
    ("Can you tell me", "what bees make?", "bees"),
    ("What is the biggest animal", "in the ocean?", "ocean"),
    ("I would like to know", "the colour of snow.", "snow"),
    ("Which country", "is Madrid in?", "madrid"),
)
PAUSES = (0.3, 0.5, 0.8)

VOICES: dict[str, tuple[str, dict[str, Any]]] = {
    "piper-joe": ("piper", {}),
    "espeak-us": ("espeak", {"voice": "en-us", "words_per_minute": 165}),
    "espeak-f3": ("espeak", {"voice": "en-us+f3", "words_per_minute": 160}),
}
NUMBERS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
           "8": "eight", "9": "nine", "10": "ten", "12": "twelve", "24": "twentyfour", "60": "sixty",
           "mr": "mister", "colour": "color", "centre": "center"}  # fmt: skip


def words(text: str) -> list[str]:
    text = text.lower().replace("twenty-four", "twentyfour").replace("-", " ")
    return [NUMBERS.get(w, w) for w in re.findall(r"[a-z0-9']+", text)]


def answered(reply: str, expect: tuple[str, ...]) -> bool:
    said = set(words(reply))
    return any(NUMBERS.get(e, e) in said for e in expect)


def phone(pcm: np.ndarray) -> np.ndarray:
    """16 kHz speech as a phone line carries it: 8 kHz G.711 µ-law, back at 16 kHz."""
    narrow = resample_chunk(pcm.astype(np.int16), RATE, PHONE_RATE)
    line = ulaw_decode(ulaw_encode(narrow))
    return resample_chunk(np.asarray(line, np.int16), PHONE_RATE, RATE)


def recordings() -> list[tuple[str, str, np.ndarray]]:
    """(set, reference, 16 kHz audio) of the real recorded speech."""
    clips = [("librivox", ref, audio) for name, ref, audio in librivox() if "+" not in name]
    for line in (SPHINX / "cards" / "cards.transcription").read_text().splitlines():
        text, _, name = line.rpartition("(")
        audio, rate = sf.read(SPHINX / "cards" / f"{name.strip(' )')}.wav", dtype="int16")
        assert rate == RATE
        clips.append(("cards", text.replace("<s>", "").replace("</s>", "").strip(), np.asarray(audio, np.int16)))
    clips.append(("goforward", "go forward ten meters", np.fromfile(SPHINX / "goforward.raw", dtype=np.int16)))
    return clips


async def synthesise(texts: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Each text in each voice, at 16 kHz."""
    from voxline.providers.tts.espeak import EspeakConfig, EspeakTTS
    from voxline.providers.tts.piper import PiperTTS

    out: dict[str, dict[str, np.ndarray]] = {}
    for voice, (engine, options) in VOICES.items():
        tts: Any = PiperTTS() if engine == "piper" else EspeakTTS(EspeakConfig(**options))
        await tts.load()
        done = {}
        for text in dict.fromkeys(texts):
            pcm = np.concatenate([c async for c in tts.synthesize(text)])
            done[text] = resample_chunk(pcm, tts.sample_rate, RATE)
        out[voice] = done
    return out


def wer_row(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    errs = sum(errors(words(ref), words(hyp)) for ref, hyp in pairs)
    total = sum(len(words(ref)) for ref, _ in pairs)
    return {"wer_pct": round(100 * errs / max(1, total), 2), "errors": errs, "words": total,
            "misheard": [{"ref": r, "heard": h} for r, h in pairs if errors(words(r), words(h))]}


async def part_wer(stt: Any, speech: dict[str, dict[str, np.ndarray]], questions: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    real = recordings()
    for rate, line in (("16k", lambda a: a), ("8k_ulaw", phone)):
        by_set: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
        for name, ref, audio in real:
            by_set[name].append((ref, await transcribe(stt, line(audio))))
        for voice, clips in speech.items():
            for text, audio in clips.items():
                if text in dict(QUESTIONS[:questions]):
                    by_set[f"questions/{voice}"].append((text, await transcribe(stt, line(audio))))
        for name, pairs in by_set.items():
            row = out[f"{name}/{rate}"] = wer_row(pairs)
            print(f"wer {name:22s} {rate:8s} {row['wer_pct']:6.2f}% ({row['errors']}/{row['words']})", flush=True)
    return out


class Harness:
    """Calls into the service's own pipeline, in process."""

    def __init__(self, runtime: Runtime, registry: SessionRegistry, events: dict[str, list[Any]]) -> None:
        self.runtime = runtime
        self.registry = registry
        self.events = events
        self.calls = 0
        self.questions = len(QUESTIONS)
        self.paused = len(PAUSED)

    async def call(
        self, audio: Callable[[int, list[tuple[float, np.ndarray]]], np.ndarray | None], *,
        speed: float, until: Callable[[list[Any], list[tuple[float, np.ndarray]]], bool] | None = None,
        greet: bool = False, min_frames: int = 0,
    ) -> tuple[list[Any], list[tuple[float, np.ndarray]], dict[int, float], Any]:
        """One call: ``audio(k, heard)`` gives caller frame k (None: hang up);
        returns the call's agent events, the reply audio heard (time, pcm),
        the send time of every caller frame, and the agent."""
        self.calls += 1
        session = self.registry.admit(f"q{self.calls}", "in-process", "assistant")
        heard: list[tuple[float, np.ndarray]] = []

        def sink(frame: Frame) -> None:
            if type(frame) is Audio:
                heard.append((time.monotonic(), frame.pcm))

        wire = InProcess(sink)
        config = self.runtime.config
        self.runtime.config = dataclasses.replace(config, greet=greet)  # for this call's agent only
        try:
            await self.runtime.open(session, wire)
        finally:
            self.runtime.config = config
        assert wire.port is not None
        events = self.events.setdefault(session.id, [])
        sent: dict[int, float] = {}
        t0 = time.monotonic()
        k = 0
        try:
            while (pcm := audio(k, heard)) is not None:
                await asyncio.sleep(max(0.0, t0 + k * 0.02 / speed - time.monotonic()))
                sent[k] = time.monotonic()
                wire.port.receive(Audio(pcm, RATE, k * FRAME, sent[k]))
                k += 1
                if until is not None and k >= min_frames and until(events, heard):
                    break
        finally:
            agent = session.agent
            await session.end("done")
        return events, heard, sent, agent


def frames_of(pcm: np.ndarray) -> list[np.ndarray]:
    n = len(pcm) // FRAME
    return [pcm[i * FRAME : (i + 1) * FRAME].copy() for i in range(n)]


def script(*pieces: np.ndarray, tail: float = 12.0) -> Callable[[int, Any], np.ndarray | None]:
    frames = [f for p in pieces for f in frames_of(p)]
    total = len(frames) + int(tail / 0.02)
    quiet = np.zeros(FRAME, np.int16)

    def audio(k: int, _: Any) -> np.ndarray | None:
        if k >= total:
            return None
        return frames[k] if k < len(frames) else quiet

    return audio


def caller_finals(events: list[Any]) -> list[str]:
    return [e.data["text"] for e in events if e.kind == "transcript" and e.data.get("who") == "caller"
            and e.data.get("final")]


def agent_replies(events: list[Any]) -> list[str]:
    return [e.data["text"] for e in events if e.kind == "transcript" and e.data.get("who") == "agent"]


async def part_answers(h: Harness, speech: dict[str, dict[str, np.ndarray]], speed: float) -> dict[str, Any]:
    rows = []
    lead = np.zeros(RATE // 2, np.int16)
    for rate, line in (("16k", lambda a: a), ("8k_ulaw", phone)):
        for voice, clips in speech.items():
            for text, expect in QUESTIONS[: h.questions]:
                events, *_ = await h.call(script(lead, line(clips[text]), tail=20.0 * speed), speed=speed,
                                          until=lambda ev, _: bool(agent_replies(ev)))
                reply = " ".join(agent_replies(events))
                rows.append({"rate": rate, "voice": voice, "question": text, "heard": " ".join(caller_finals(events)),
                             "errors": [e.data for e in events if e.kind == "error"],
                             "rejected": [e.data["text"] for e in events if e.kind == "rejected"],
                             "reply": reply, "ok": answered(reply, expect)})
                mark = "ok " if rows[-1]["ok"] else "BAD"
                print(f"answer {mark} {rate:7s} {voice:10s} {text!r} heard {rows[-1]['heard']!r} -> {reply[:70]!r}",
                      flush=True)
    out: dict[str, Any] = {}
    for rate in ("16k", "8k_ulaw"):
        sub = [r for r in rows if r["rate"] == rate]
        out[rate] = {"asked": len(sub), "right": sum(r["ok"] for r in sub),
                     "right_pct": round(100 * sum(r["ok"] for r in sub) / max(1, len(sub)), 1),
                     "by_voice": {v: sum(r["ok"] for r in sub if r["voice"] == v) for v in speech}}
    out["no_reply"] = sum(1 for r in rows if not r["reply"])  # nothing said in 20 s (or a provider failed)
    out["wrong"] = [r for r in rows if not r["ok"]]
    return out


def noise_source(kind: str, seconds: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    if kind == "silence":
        x = np.zeros(n)
    elif kind == "line_noise":
        # Hiss at about -45 dBFS, mains hum and its harmonics, and crackle bursts.
        x = rng.normal(0, 180, n) + 250 * np.sin(2 * np.pi * 50 * t) + 120 * np.sin(2 * np.pi * 150 * t)
        bursts = rng.random(n // 1600) < 0.05
        for i in np.nonzero(bursts)[0]:
            x[i * 1600 : i * 1600 + 400] += rng.normal(0, 2500, 400)
    elif kind == "tones":
        # Ring-back (440+480 Hz, 2 s on, 4 s off), then a melody of chords: music on hold.
        ring = (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t)) * ((t % 6) < 2)
        notes = 220 * 2 ** (rng.integers(0, 12, int(seconds * 2) + 1) / 12)
        f = notes[(t * 2).astype(int)]
        chord = sum(np.sin(2 * np.pi * f * r * t) for r in (1.0, 1.26, 1.5))
        x = np.where(t < seconds / 2, 3000 * ring, 2500 * chord)
    else:
        raise ValueError(kind)
    return np.clip(x, -32768, 32767).astype(np.int16)


async def part_hallucination(h: Harness, speed: float, seconds: float = 60.0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("silence", "line_noise", "tones"):
        events, *_ = await h.call(script(noise_source(kind, seconds), tail=0.0), speed=speed)
        out[kind] = {"seconds": seconds, "invented_turns": len([t for t in caller_finals(events) if t.strip()]),
                     "heard": caller_finals(events), "rejected": [e.data for e in events if e.kind == "rejected"]}
        print(f"hallucination {kind:10s} invented {out[kind]['invented_turns']} {out[kind]['heard']} "
              f"rejected {len(out[kind]['rejected'])}", flush=True)
    # The bot's own voice: every reply frame comes back 100 ms later, 6 dB down,
    # over a quiet hiss (a line without echo cancellation), in real time.
    delay = 5
    rng = np.random.default_rng(3)
    total = int(seconds / 0.02)
    taken = [0]

    def echo(k: int, heard: list[tuple[float, np.ndarray]]) -> np.ndarray | None:
        if k >= total:
            return None
        hiss = rng.normal(0, 60, FRAME)
        i = taken[0]
        if i < len(heard) - delay:
            taken[0] += 1
            return np.clip(heard[i][1].astype(np.float64) * 0.5 + hiss, -32768, 32767).astype(np.int16)
        return hiss.astype(np.int16)

    events, *_ = await h.call(echo, speed=1.0, greet=True)
    out["echo"] = {"seconds": seconds, "invented_turns": len([t for t in caller_finals(events) if t.strip()]),
                   "heard": caller_finals(events), "bot_said": agent_replies(events),
                   "rejected": [e.data for e in events if e.kind == "rejected"]}
    print(f"hallucination echo       invented {out['echo']['invented_turns']} {out['echo']['heard']} "
          f"rejected {len(out['echo']['rejected'])}", flush=True)
    out["invented_turns"] = sum(v["invented_turns"] for v in out.values() if isinstance(v, dict))
    return out


def onsets(heard: list[tuple[float, np.ndarray]]) -> list[float]:
    return [t for t, pcm in heard if float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > ONSET]


async def part_turns(h: Harness) -> dict[str, Any]:
    from voxline.providers.tts.piper import PiperTTS

    tts = PiperTTS()
    await tts.load()

    async def say(text: str) -> np.ndarray:
        pcm = np.concatenate([c async for c in tts.synthesize(text)])
        return resample_chunk(pcm, tts.sample_rate, RATE)

    def trim(pcm: np.ndarray) -> np.ndarray:
        # Piper pads each sentence with silence: the pause is the one we put in.
        n = len(pcm) // 160
        rms = np.sqrt(np.mean(pcm[: n * 160].astype(np.float64).reshape(n, 160) ** 2, axis=1))
        loud = np.nonzero(rms > 0.05 * rms.max())[0]
        return pcm[loud[0] * 160 : (loud[-1] + 1) * 160]

    rows = []
    lead = np.zeros(RATE // 2, np.int16)
    for first, second, word in PAUSED[: h.paused]:
        a, b = trim(await say(first)), trim(await say(second))
        for pause in PAUSES:
            gap = np.zeros(int(pause * RATE), np.int16)
            audio = np.concatenate([lead, a, gap, b])
            audio = audio[: len(audio) // FRAME * FRAME]
            end_a = (len(lead) + len(a)) // FRAME
            end_b = len(audio) // FRAME
            events, heard, sent, agent = await h.call(
                script(audio, tail=8.0), speed=1.0,
                until=lambda ev, hd: bool(agent_replies(ev)) and bool(onsets(hd)),
                min_frames=end_b + 1,  # the whole question is sent, whatever was answered before it ended
            )
            t_a, t_b = sent.get(end_a - 1, 0.0) + 0.02, sent.get(end_b - 1, 0.0) + 0.02
            starts = onsets(heard)
            early = [t for t in starts if t_a < t < t_b]
            late = [t for t in starts if t >= t_b]  # the first reply begun after the caller finished
            asked = [m["content"] for m in agent.conversation.history() if m["role"] == "user"]
            # Both halves answered: the answered words are not short of one half
            # (counted in words, so a misheard word is not taken for a lost half).
            half = not asked or len(words(asked[-1])) < 0.75 * len(words(f"{first} {second}"))
            rows.append({"question": f"{first} ... {second}", "pause_s": pause, "cut_off": bool(early) or half,
                         "reply_before_caller_finished": bool(early), "answered_half": half,
                         "answered": asked[-1] if asked else "",
                         "v2v_ms": round((late[0] - t_b) * 1000, 1) if late else None})
            print(f"turn pause {pause:.1f}s {first!r}..{second!r}: cut off {rows[-1]['cut_off']} "
                  f"v2v {rows[-1]['v2v_ms']} ms  answered {rows[-1]['answered']!r}", flush=True)
    v2v = [r["v2v_ms"] for r in rows if r["v2v_ms"] is not None]
    return {"utterances": len(rows), "false_cut_offs": sum(r["cut_off"] for r in rows),
            "false_cut_off_pct": round(100 * sum(r["cut_off"] for r in rows) / len(rows), 1),
            "by_pause": {str(p): sum(r["cut_off"] for r in rows if r["pause_s"] == p) for p in PAUSES},
            "v2v_p50_ms": round(statistics.median(v2v), 1) if v2v else None, "rows": rows}


async def part_turn_model(speech: dict[str, dict[str, np.ndarray]], questions: int) -> dict[str, Any]:
    """Smart Turn's verdicts, offline: at the end of every question (in every
    voice, at both rates) the turn is complete; at the pause of each paused
    question (its first half) it is not. And what a verdict costs."""
    from voxline.agent.smart_turn import SmartTurn
    from voxline.providers.tts.piper import PiperTTS

    model = SmartTurn()
    await model.load()
    tts = PiperTTS()
    await tts.load()
    ends: list[float] = []
    pauses: list[float] = []
    cost: list[float] = []

    def judge(audio: np.ndarray) -> float:
        started = time.perf_counter()
        p = model.probability(audio)
        cost.append(time.perf_counter() - started)
        return p

    for line in (lambda a: a, phone):
        for clips in speech.values():
            for text, _ in QUESTIONS[:questions]:
                ends.append(judge(line(clips[text])))
        for first, _, _ in PAUSED:
            pcm = np.concatenate([c async for c in tts.synthesize(first)])
            pauses.append(judge(line(resample_chunk(pcm, tts.sample_rate, RATE))))
    t = model.config.threshold
    out = {"ends": len(ends), "ends_complete_pct": round(100 * sum(p >= t for p in ends) / len(ends), 1),
           "pauses": len(pauses), "pauses_incomplete_pct": round(100 * sum(p < t for p in pauses) / len(pauses), 1),
           "verdict_ms_p50": round(statistics.median(cost) * 1000, 1),
           "verdict_ms_max": round(max(cost) * 1000, 1)}
    print(f"turn model: complete at {out['ends_complete_pct']}% of question ends, incomplete at "
          f"{out['pauses_incomplete_pct']}% of pauses, {out['verdict_ms_p50']} ms a verdict", flush=True)
    return out


# Questions as whisper tiny.en misheard them through G.711 (benchmarks.quality
# runs): a voice assistant should still answer, or say it did not understand.
MISHEARD: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital on France?", ("paris",)),
    ("who wrote Romito and Juliet.", ("shakespeare",)),
    ("How many days are every week?", ("seven",)),
    ("What gas do people breathe into live?", ("oxygen",)),
    ("in two plus two.", ("four",)),
    ("What is the capital and friends?", ("paris", "repeat", "sorry", "understand", "catch")),
)


async def part_llm(models: list[str], prompt: str, runs: int, temperature: float | None) -> dict[str, Any]:
    """Each candidate LLM on the questions as text (what a perfect recogniser hears),
    with the service's system prompt and sampling: right answers, time to the
    first token and to the whole answer, the answer's length."""
    from voxline.config import LlmConfig
    from voxline.providers.llm.llama import LlamaConfig, LlamaLLM

    from voxline.providers.factory import LLAMA_MODELS

    defaults = LlmConfig()
    out: dict[str, Any] = {}
    for name in models:
        llm = LlamaLLM(LlamaConfig(model=LLAMA_MODELS.get(name, name), max_tokens=defaults.max_tokens,
                                   temperature=defaults.temperature if temperature is None else temperature,
                                   n_threads=defaults.threads,
                                   burst_threads=defaults.burst_threads or None))
        await llm.load()
        await llm.warm(prompt)  # as the service does at start
        right, first, whole, lengths, wrong, failed = 0, [], [], [], [], 0
        for _ in range(runs):
            for text, expect in QUESTIONS + MISHEARD:
                started = time.perf_counter()
                pieces: list[str] = []
                try:
                    async for piece in llm.stream([{"role": "system", "content": prompt},
                                                   {"role": "user", "content": text}]):
                        if not pieces:
                            first.append(time.perf_counter() - started)
                        pieces.append(piece)
                except ProviderError as exc:  # a missed deadline is a wrong answer, and counted
                    failed += 1
                    print(f"llm {name}: {exc}", flush=True)
                whole.append(time.perf_counter() - started)
                reply = "".join(pieces).strip()
                lengths.append(len(words(reply)))
                if answered(reply, expect):
                    right += 1
                else:
                    wrong.append({"question": text, "reply": reply})
        asked = runs * len(QUESTIONS + MISHEARD)
        out[name] = {"asked": asked, "right": right, "right_pct": round(100 * right / asked, 1),
                     "first_token_ms_p50": round(statistics.median(first) * 1000, 1) if first else None,
                     "answer_ms_p50": round(statistics.median(whole) * 1000, 1),
                     "words_p50": statistics.median(lengths), "failed": failed, "wrong": wrong}
        print(f"llm {name}: {right}/{asked} right, first token p50 {out[name]['first_token_ms_p50']} ms, "
              f"answer p50 {out[name]['answer_ms_p50']} ms, {out[name]['words_p50']} words", flush=True)
        close = getattr(llm, "close", None)
        if close is not None:
            res = close()
            if hasattr(res, "__await__"):
                await res
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    parts = [p for p in args.parts.split(",") if p]
    if parts == ["llm"]:  # text only: no service, no voices
        from voxline.agent import prompts

        models = [m for m in args.llm_models.split(",") if m]
        prompt = getattr(prompts, args.prompt) if args.prompt else prompts.SYSTEM_PROMPT
        return {"benchmark": "quality", "prompt": prompt,
                "llm": await part_llm(models, prompt, args.runs, args.temperature)}
    overrides: dict[str, Any] = {"greet": False, "vad": "silero", "records": False}
    if args.stt_model:
        overrides["providers.stt.model"] = args.stt_model
    if args.beam is not None:
        overrides["providers.stt.beam_size"] = args.beam
    if args.llm_model:
        overrides["providers.llm.model"] = args.llm_model
    cfg = load_config(overrides=overrides)
    registry = SessionRegistry(4)
    events: dict[str, list[Any]] = {}
    runtime = Runtime(cfg, registry, observer=lambda s, e: events.setdefault(s.id, []).append(e))
    started = time.perf_counter()
    await runtime.start()
    if not runtime.readiness()["models"]:
        raise SystemExit("models did not load; see the log")
    out: dict[str, Any] = {"benchmark": "quality", "stt": cfg.providers.stt.model,
                           "beam": cfg.providers.stt.beam_size, "llm": cfg.providers.llm.model,
                           "model_load_s": round(time.perf_counter() - started, 2)}
    speech = await synthesise([q for q, _ in QUESTIONS]) if {"wer", "answers", "turn_model"} & set(parts) else {}
    h = Harness(runtime, registry, events)
    h.questions, h.paused = args.questions or len(QUESTIONS), args.paused or len(PAUSED)
    try:
        if "wer" in parts:
            out["wer"] = await part_wer(runtime.providers.stt, speech, h.questions)
        if "answers" in parts:
            out["answers"] = await part_answers(h, speech, args.speed)
        if "hallucination" in parts:
            out["hallucination"] = await part_hallucination(h, args.speed, args.seconds)
        if "turns" in parts:
            out["turns"] = await part_turns(h)
        if "turn_model" in parts:
            out["turn_model"] = await part_turn_model(speech, h.questions)
    finally:
        await runtime.stop()
    out["summary"] = summary(out)
    print("summary", out["summary"], flush=True)
    return out


def summary(out: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    if "wer" in out:
        for key in ("librivox/16k", "librivox/8k_ulaw", "cards/8k_ulaw", "goforward/8k_ulaw"):
            s[f"wer_{key}"] = out["wer"][key]["wer_pct"]
        for rate in ("16k", "8k_ulaw"):
            rows = [v for k, v in out["wer"].items() if k.startswith("questions/") and k.endswith(rate)]
            s[f"wer_questions/{rate}"] = round(100 * sum(r["errors"] for r in rows)
                                               / max(1, sum(r["words"] for r in rows)), 2)
    if "answers" in out:
        s["answers_right_pct_16k"] = out["answers"]["16k"]["right_pct"]
        s["answers_right_pct_8k_ulaw"] = out["answers"]["8k_ulaw"]["right_pct"]
    if "hallucination" in out:
        s["invented_turns"] = out["hallucination"]["invented_turns"]
    if "turn_model" in out:
        s["turn_model"] = {k: v for k, v in out["turn_model"].items() if k.endswith(("pct", "p50"))}
    if "turns" in out:
        s["false_cut_off_pct"] = out["turns"]["false_cut_off_pct"]
        s["paused_v2v_p50_ms"] = out["turns"]["v2v_p50_ms"]
    return s


def main(argv: list[str] | None = None) -> None:
    parser = new_parser("quality", __doc__)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--stt-model", default="", help="providers.stt.model (tiny.en, base, or a path)")
    parser.add_argument("--beam", type=int, default=None, help="providers.stt.beam_size")
    parser.add_argument("--llm-model", default="", help="providers.llm.model")
    parser.add_argument("--speed", type=float, default=2.0,
                        help="caller frames per 20 ms of wall time, for answers and noise (turns: real time)")
    parser.add_argument("--llm-models", default="qwen2.5-0.5b-instruct",
                        help="--parts llm: the GGUF models to compare (comma list)")
    parser.add_argument("--runs", type=int, default=1, help="--parts llm: passes over the questions")
    parser.add_argument("--temperature", type=float, default=None, help="--parts llm: sampling temperature")
    parser.add_argument("--prompt", default="", help="--parts llm: a prompt's name in voxline.agent.prompts")
    parser.add_argument("--questions", type=int, default=0, help="the first N questions only (0: all)")
    parser.add_argument("--paused", type=int, default=0, help="the first N paused questions only (0: all)")
    parser.add_argument("--seconds", type=float, default=60.0, help="of each hallucination source")
    run_main(parser, main_async, argv)


if __name__ == "__main__":
    main()
