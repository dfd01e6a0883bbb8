"""Providers from configuration: the embedded default, or remote engines with the
embedded ones behind them as fallbacks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from voxline.config import LlmConfig, ProvidersConfig, SttConfig, TtsConfig

from .base import Deadlines, LanguageModel, SpeechToText, TextToSpeech
from .chunked import ChunkedTTS

__all__ = ["Providers", "build_providers"]

log = logging.getLogger(__name__)

# Config names for the embedded models (MODELS.md) -> the names models.py resolves.
WHISPER_MODELS = {"tiny.en": "whisper-tiny.en", "base": "whisper-base"}
LLAMA_MODELS = {"qwen2.5-0.5b-instruct": "qwen2.5-coder-0.5b-instruct-q4_k_m", "smollm2": "smollm2-135m-instruct"}


@dataclass(frozen=True, slots=True)
class Providers:
    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech
    offline: TextToSpeech  # the voice that apologises when everything else fails

    def metered(self) -> Providers:
        """The same providers, each counting requests, failures and first-result time."""
        from .metered import MeteredLLM, MeteredSTT, MeteredTTS

        return Providers(MeteredSTT(self.stt), MeteredLLM(self.llm), MeteredTTS(self.tts),
                         MeteredTTS(self.offline))

    def stats(self) -> list[dict[str, Any]]:
        """Per provider: requests, failures, first-result time; breaker and health
        of each member where a fallback chain stands behind it."""
        rows = []
        for p in (self.stt, self.llm, self.tts, self.offline):
            stats = getattr(p, "stats", None)
            if stats is None:
                continue
            row = stats.as_dict()
            chain_state = getattr(getattr(p, "inner", p), "state", None)
            if callable(chain_state):
                row["members"] = chain_state()
            rows.append(row)
        return rows

    async def load(self, deadlines: Deadlines | None = None) -> None:
        """Load every embedded model now (in the executor), so no call waits for it."""
        for p in (self.stt, self.llm, self.tts, self.offline):
            for member in _members(p):
                load = getattr(member, "load", None)
                if load is not None:
                    await load(deadlines or Deadlines(connect=120.0))


def _members(provider: Any) -> list[Any]:
    provider = getattr(provider, "inner", provider)  # behind a meter
    chain = getattr(provider, "chain", None)
    members = getattr(chain, "members", None) or getattr(chain, "providers", None)
    if members:
        return [getattr(m, "provider", m) for m in members]
    return [provider]


def build_providers(cfg: ProvidersConfig) -> Providers:
    from .tts.espeak import EspeakTTS

    offline = EspeakTTS()
    # Every TTS, the offline voice too, is handed bounded pieces (see chunked.py).
    tts = ChunkedTTS(_tts(cfg.tts, offline), cfg.tts.max_chars)
    return Providers(_stt(cfg.stt), _llm(cfg.llm), tts, ChunkedTTS(offline, cfg.tts.max_chars))


def _stt(cfg: SttConfig) -> SpeechToText:
    if cfg.engine == "whisper":
        from .stt.whisper import WhisperConfig, WhisperSTT

        return WhisperSTT(WhisperConfig(model=WHISPER_MODELS.get(cfg.model, cfg.model), beam_size=cfg.beam_size,
                                        interim_interval_ms=cfg.interim_ms or None))
    if cfg.engine == "deepgram":
        from .resilience import FallbackSTT
        from .stt.deepgram import DeepgramSTT
        from .stt.whisper import WhisperSTT

        remote = DeepgramSTT(cfg.api_key, cfg.url or "wss://api.deepgram.com/v1/listen")
        return FallbackSTT([remote, WhisperSTT()], name="stt")
    raise ValueError(f"providers.stt.engine {cfg.engine!r} is not whisper or deepgram")


def _one_llm(engine: str, cfg: LlmConfig) -> LanguageModel:
    if engine == "llama":
        from .llm.llama import LlamaConfig, LlamaLLM

        model = cfg.model if cfg.engine == "llama" else "qwen2.5-0.5b-instruct"
        return LlamaLLM(LlamaConfig(model=LLAMA_MODELS.get(model, model), max_tokens=cfg.max_tokens,
                                    temperature=cfg.temperature, n_threads=cfg.threads,
                                    burst_threads=cfg.burst_threads or None))
    if engine == "openai":
        from .llm.openai_compat import OpenAICompatLLM

        if not cfg.base_url:
            raise ValueError("providers.llm.base_url is required for the openai engine")
        return OpenAICompatLLM(cfg.base_url, cfg.api_key or None, cfg.model,
                               max_tokens=cfg.max_tokens, temperature=cfg.temperature)
    raise ValueError(f"providers.llm.engine {engine!r} is not llama or openai")


def _llm(cfg: LlmConfig) -> LanguageModel:
    engines = [cfg.engine, *cfg.fallback]
    if len(engines) == 1:
        return _one_llm(cfg.engine, cfg)
    from .resilience import FallbackLLM

    return FallbackLLM([_one_llm(e, cfg) for e in engines], name="llm")


def _tts(cfg: TtsConfig, offline: TextToSpeech) -> TextToSpeech:
    if cfg.engine == "piper":
        from .tts.piper import PiperConfig, PiperTTS

        voice = "piper-joe-medium" if cfg.voice == "joe-medium" else cfg.voice
        return PiperTTS(PiperConfig(model=voice))
    if cfg.engine == "espeak":
        return offline
    from .resilience import FallbackTTS

    remote: TextToSpeech
    if cfg.engine == "openai":
        from .tts.openai_tts import OpenAITTS

        remote = OpenAITTS(cfg.api_key, voice=cfg.voice or "alloy",
                           base_url=cfg.base_url or "https://api.openai.com/v1")
    elif cfg.engine == "elevenlabs":
        from .tts.elevenlabs import ElevenLabsTTS

        remote = ElevenLabsTTS(cfg.api_key, cfg.voice)
    elif cfg.engine == "deepgram":
        from .tts.deepgram_tts import DeepgramTTS

        remote = DeepgramTTS(cfg.api_key)
    else:
        raise ValueError(f"providers.tts.engine {cfg.engine!r} is not known")
    return FallbackTTS([remote, offline], name="tts", sample_rate=remote.sample_rate)
