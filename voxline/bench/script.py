"""What the callers say: a script of turns.

A turn is one caller utterance (synthetic, a recording, or text voiced by a
TTS provider) and what the caller does with the reply: listen (``ask``), talk
over it (``bargein``), or cough over it (``cough``). ``expect`` lists words the
reply should contain (checked when replies are transcribed).

``--script FILE`` is JSON::

    {"turns": [
      {"say": "What is two plus two?", "expect": ["four"]},
      {"audio": "question.wav", "kind": "bargein"},
      {"raw": "/usr/share/pocketsphinx/test/data/numbers.raw", "text": "..."}
    ]}

``audio`` is anything soundfile reads; ``raw`` is 16 kHz signed 16-bit mono.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voxline.media.resample import resample_chunk

from .signals import silence, utterance

__all__ = ["Turn", "synthetic_script", "load_script", "sphinx_script", "sphinx_recordings", "voice_texts", "KINDS",
           "QUESTIONS", "SPHINX_DIR"]

RATE = 16000
KINDS = ("ask", "bargein", "cough")
SPHINX_DIR = Path("/usr/share/pocketsphinx/test/data")
QUESTIONS = (
    ("What is the capital of France?", ("paris",)),
    ("How many days are there in a week?", ("seven", "7")),
    ("What is two plus two?", ("four", "4")),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What do bees make?", ("honey",)),
    ("Which ocean is the biggest?", ("pacific",)),
    ("How many minutes are in an hour?", ("sixty", "60")),
)
INTERRUPTION = "Sorry, wait. Tell me about the moon instead."


@dataclass
class Turn:
    audio: npt.NDArray[np.int16]  # 16 kHz
    kind: str = "ask"
    text: str = ""
    expect: tuple[str, ...] = ()
    interrupt_audio: npt.NDArray[np.int16] | None = None  # 16 kHz; synthetic when None
    voice: str = ""  # which voice said it, when voiced
    _cache: dict[int, npt.NDArray[np.int16]] = field(default_factory=dict, repr=False)

    def pcm(self, rate: int) -> npt.NDArray[np.int16]:
        return _at(self.audio, rate, self._cache)

    def interruption(self, rate: int) -> npt.NDArray[np.int16]:
        src = self.interrupt_audio if self.interrupt_audio is not None else utterance(1.2, RATE, f0=180.0, seed=7)
        return _at(src, rate, {})


def _at(pcm: npt.NDArray[np.int16], rate: int, cache: dict[int, npt.NDArray[np.int16]]) -> npt.NDArray[np.int16]:
    if rate not in cache:
        cache[rate] = pcm if rate == RATE else resample_chunk(pcm, RATE, rate).astype(np.int16)
    return cache[rate]


def kind_of(i: int, bargein: bool) -> str:
    """Every third turn talks over the reply, the one after coughs over it."""
    if not bargein:
        return "ask"
    return ("ask", "bargein", "cough")[i % 3]


def synthetic_script(turns: int, bargein: bool = True) -> list[Turn]:
    """Speech-like sounds of 0.8-1.4 s (for the echo and delay agents: no words needed)."""
    return [Turn(np.concatenate((utterance(0.8 + 0.2 * (i % 4), RATE, seed=i), silence(0.02))), kind_of(i, bargein))
            for i in range(turns)]


def sphinx_script(turns: int, bargein: bool = True, root: Path = SPHINX_DIR) -> list[Turn]:
    """Real recorded speech with its transcripts: pocketsphinx-testdata's LibriVox
    readings and card names (16 kHz WAV) and "go forward ten meters", in turn."""
    recordings = sphinx_recordings(root)
    if not recordings:
        raise FileNotFoundError(f"no recordings with transcripts under {root} (apt install pocketsphinx-testdata)")
    out = []
    for i in range(turns):
        pcm, text = recordings[i % len(recordings)]
        out.append(Turn(pcm[: RATE * 8], kind_of(i, bargein), text))
    return out


def sphinx_recordings(root: Path = SPHINX_DIR) -> list[tuple[npt.NDArray[np.int16], str]]:
    """(16 kHz int16, transcript) of every recording whose transcript is known."""
    import soundfile

    found: list[tuple[npt.NDArray[np.int16], str]] = []
    for folder, listing in (("librivox", "transcription"), ("cards", "cards.transcription")):
        path = root / folder / listing
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            m = re.fullmatch(r"\s*<s>\s*(.*?)\s*</s>\s*\((\S+)\)\s*", line)
            wav = root / folder / f"{m.group(2)}.wav" if m else None
            if m is None or wav is None or not wav.exists():
                continue
            data, rate = soundfile.read(wav, dtype="int16", always_2d=True)
            pcm = data[:, 0] if rate == RATE else resample_chunk(data[:, 0], rate, RATE).astype(np.int16)
            found.append((pcm, " ".join(m.group(1).split())))
    raw = root / "goforward.raw"
    if raw.exists():
        found.append((np.fromfile(raw, dtype="<i2").astype(np.int16), "go forward ten meters"))
    return found


def voice_texts(pairs: list[tuple[str, tuple[str, ...]]], voice: Any, bargein: bool = True,
                interruption: npt.NDArray[np.int16] | None = None) -> list[Turn]:
    """Turns spoken by ``voice`` (``text -> 16 kHz int16``), or by several in turn
    (a list of ``(name, voice)``: turn i by voice i mod their number)."""
    voices = voice if isinstance(voice, list) else [("", voice)]
    out = []
    for i, (text, expect) in enumerate(pairs):
        name, say = voices[i % len(voices)]
        out.append(Turn(np.concatenate((say(text), silence(0.05))), kind_of(i, bargein), text, tuple(expect),
                        interrupt_audio=interruption, voice=name))
    return out


def load_script(path: str | Path, voice: Any | None, bargein: bool = True) -> list[Turn]:
    """A user's script (see the module docstring); ``voice`` voices ``say`` turns."""
    import soundfile

    body = json.loads(Path(path).read_text())
    rows = body["turns"] if isinstance(body, dict) else body
    out: list[Turn] = []
    for i, row in enumerate(rows):
        kind = row.get("kind", kind_of(i, bargein))
        if kind not in KINDS:
            raise ValueError(f"turn {i + 1}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
        expect = tuple(str(w).lower() for w in row.get("expect", ()))
        text = str(row.get("say") or row.get("text") or "")
        if "say" in row:
            if voice is None:
                raise ValueError(f"turn {i + 1}: 'say' needs a voice (TTS) and none is available")
            pcm = voice(str(row["say"]))
        elif "raw" in row:
            pcm = np.fromfile(Path(path).parent / row["raw"], dtype="<i2").astype(np.int16)
        elif "audio" in row:
            data, rate = soundfile.read(Path(path).parent / row["audio"], dtype="int16", always_2d=True)
            pcm = data[:, 0] if rate == RATE else resample_chunk(data[:, 0], rate, RATE).astype(np.int16)
        else:
            raise ValueError(f"turn {i + 1} needs 'say', 'audio' or 'raw'")
        out.append(Turn(np.concatenate((pcm, silence(0.05))), kind, text, expect))
    return out
