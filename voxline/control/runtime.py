"""The process-wide runtime: shared models and VAD, and the pipeline of each session.

One runtime per process holds what every call shares (the embedded models, loaded
once; the Silero batcher) and builds each session's pipeline::

    transport in -> [VAD] -> agent -> resample(agent rate -> wire rate) -> playout -> transport out

A transport gives 16 kHz mono Audio and takes Audio at its own rate through a
sync ``send``; the pipeline is the same for WebRTC, SIP or a media-server sidecar.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from voxline.agent.assistant import AgentEvent, Assistant, AssistantConfig
from voxline.agent.prompts import SYSTEM_PROMPT
from voxline.agent.simple import Echo, Transcribe
from voxline.agent.turns import State
from voxline.config import ServiceConfig
from voxline.media.endpoint import EndpointConfig
from voxline.media.frames import Frame
from voxline.media.pipeline import Pipeline
from voxline.media.playout import Playout
from voxline.media.resample import Resample
from voxline.media.silero import SileroBatcher, SileroModel
from voxline.media.vad import SileroVad, WebrtcVad
from voxline.providers.factory import Providers, build_providers

from .session import Session, SessionRegistry, SessionState

__all__ = ["Runtime", "AGENTS"]

log = logging.getLogger(__name__)

AGENTS = ("assistant", "echo", "transcribe")
INBOUND_RATE = 16000

# Endpointing per agent state: while the bot speaks, demand a longer onset before
# pausing it (echo and noise); while listening, end the turn after 0.2 s of
# silence, and after 0.06 s (two Silero windows) start recognising what was said
# and drafting the answer (SpeechPaused). A pause that was not the end costs a
# whisper decode and a cancelled draft: whisper decodes the whole utterance again
# when speech resumes (agent/listener.py), so nothing is lost in accuracy.
LISTENING = EndpointConfig(threshold=0.5, start=0.2, stop=0.2, pause=0.06)
WHILE_SPEAKING = EndpointConfig(threshold=0.6, start=0.3, stop=0.2, pause=0.06)

Observer = Callable[[Session, AgentEvent], None]


class Runtime:
    agents = AGENTS

    def __init__(
        self,
        config: ServiceConfig,
        registry: SessionRegistry,
        observer: Observer | None = None,
        *,
        providers: Providers | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.observer = observer
        self._providers = providers
        self._batcher: SileroBatcher | None = None
        self._ready = {"models": False, "vad": False}
        self._load_error: str | None = None

    @property
    def providers(self) -> Providers:
        if self._providers is None:
            self._providers = build_providers(self.config.providers).metered()
        return self._providers

    def provider_stats(self) -> list[dict[str, Any]]:
        return self._providers.stats() if self._providers is not None else []

    async def start(self) -> None:
        if self.config.vad == "silero":
            model = await asyncio.to_thread(SileroModel.load)
            self._batcher = SileroBatcher(model, rate=INBOUND_RATE)
            await self._batcher.start()
        self._ready["vad"] = True
        if self.config.agent == "echo":
            self._ready["models"] = True  # the echo agent needs none; others load on demand
            return
        try:
            await self.providers.load()
            # Evaluate the system prompt now: the first turn of every call starts
            # from it, and a cold prefix costs the first caller ~1 s.
            warm = getattr(self.providers.llm, "warm", None)
            if warm is not None:
                await warm(self.config.system_prompt or SYSTEM_PROMPT)
            self._ready["models"] = True
        except Exception as exc:  # the service stays up (echo works), but is not ready
            self._load_error = str(exc)
            log.error("loading the models failed: %s", exc)

    async def stop(self) -> None:
        await self.registry.drain(0.0)
        if self._batcher is not None:
            await self._batcher.aclose()
            self._batcher = None

    def readiness(self) -> dict[str, bool]:
        return dict(self._ready)

    # -- sessions ------------------------------------------------------------

    def build(self, session: Session, out_rate: int, sink: Callable[[Frame], None]) -> Pipeline:
        """The session's pipeline, from the transport's 16 kHz audio to ``sink`` at ``out_rate``."""
        kind = session.agent_kind
        if kind not in AGENTS:
            raise ValueError(f"agent must be one of {', '.join(AGENTS)}, not {kind!r}")
        vad: Any
        if self._batcher is not None:
            vad = SileroVad(self._batcher, LISTENING)
        else:
            vad = WebrtcVad(INBOUND_RATE, mode=3, config=LISTENING)

        def observe(event: AgentEvent) -> None:
            session.events.publish(event.kind, event.turn, **event.data)
            if self.observer is not None:
                self.observer(session, event)

        holder: list[Any] = []
        playout = Playout(out_rate, on_mark=lambda m, t: holder[0].on_mark(m, t) if holder else None)
        agent: Any
        agent_rate = INBOUND_RATE
        if kind == "echo":
            agent = Echo(observe)
        elif kind == "transcribe":
            agent = Transcribe(self.providers.stt, observe)
        else:
            p = self.providers
            words: dict[str, Any] = {}
            if self.config.system_prompt:
                words["system_prompt"] = self.config.system_prompt
            if not self.config.greet:
                words["greeting"] = None
            elif self.config.greeting:
                words["greeting"] = self.config.greeting
            cfg = AssistantConfig(**words)
            agent = Assistant(
                p.stt, p.llm, p.tts, fallback_tts=p.offline, heard=playout.heard, vad=vad,
                endpointing={State.LISTENING: LISTENING, State.SPEAKING: WHILE_SPEAKING,
                             State.THINKING: LISTENING, State.CALLER_SPEAKING: LISTENING},
                config=cfg, observer=observe,
            )
            agent_rate = p.tts.sample_rate
            holder.append(agent)
        stages: list[Any] = [vad, agent]
        if kind != "transcribe":
            stages += [Resample(agent_rate, out_rate, "hq", name="resample_out"), playout]
        pipeline = Pipeline(stages, sink, session_id=session.id, on_end=session.pipeline_ended)
        session.pipeline = pipeline
        session.agent = agent
        return pipeline

    async def webrtc_offer(self, session: Session, sdp: str) -> str:
        from voxline.transports.webrtc import WebRTCConfig, WebRTCEndpoint

        def on_state(state: str) -> None:
            session.events.publish("transport", state=state)
            if state == "connected":
                session.set_state(SessionState.ACTIVE)
            elif state in ("failed", "closed"):
                session.end_soon(f"transport {state}")

        config = WebRTCConfig(ice_hosts=self.config.ice_hosts, inbound_rate=INBOUND_RATE)
        endpoint = WebRTCEndpoint(config, on_state=on_state, name=f"webrtc:{session.id}")
        session.endpoint = endpoint
        session.set_state(SessionState.CONNECTING)
        try:
            pipeline = self.build(session, config.outbound_rate, endpoint.send)
            endpoint.on_audio = pipeline.push
            await pipeline.start()
            return await endpoint.accept(sdp)
        except BaseException:
            await session.end("offer failed")
            raise
