"""The process-wide runtime: shared models and VAD, and the pipeline of each call.

One runtime per process holds what every call shares (the embedded models, loaded
once; the Silero batcher) and opens each call on its transport: ``open(session,
transport)`` builds the same pipeline for every transport from what it declares
(``voxline.transports.base``)::

    transport -> decode -> resample in -> VAD -> agent
              -> resample out -> playout -> encode -> transport

Stages the wire does not need are left out (no codec stages where the transport's
library decodes, as aiortc does; no resampler between equal rates). Every stage is
an ordinary one: its latency is in the session's budget and its cost in the
session's stats, whatever the transport. ``CallPort`` is the runtime's side of the
transport contract: inbound frames, connection state, the peer's confirmations.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any, cast

from voxline.agent.assistant import AgentEvent, Assistant, AssistantConfig
from voxline.agent.prompts import SYSTEM_PROMPT
from voxline.agent.simple import Echo, Transcribe
from voxline.agent.toolbox import BUILTINS, Toolbox
from voxline.agent.turns import State
from voxline.config import ServiceConfig
from voxline.media.codec_stage import Decode, Encode
from voxline.media.endpoint import EndpointConfig
from voxline.media.feedback import Played
from voxline.media.frames import Audio, Dtmf, Mark, Payload
from voxline.media.pipeline import Pipeline
from voxline.media.recorder import AGENT, CALLER, CallRecording, Tap
from voxline.records.recording import StereoRecording
from voxline.media.playout import Playout, PlayoutMode
from voxline.media.resample import Quality, Resample
from voxline.media.silero import SileroBatcher, SileroModel
from voxline.media.vad import SileroVad, WebrtcVad
from voxline.providers.factory import Providers, build_providers
from voxline.transports.base import SinkMode, Transport, is_peer_end

from .line import SessionLine, Transfer
from .session import Session, SessionRegistry, SessionState

__all__ = ["Runtime", "CallPort", "AGENTS"]

log = logging.getLogger(__name__)

AGENTS = ("assistant", "echo", "transcribe")
RECORDINGS = "recordings"  # under data_dir: <session id>.wav
RECORDING_RATE = 16000  # a wideband call's recording (a narrowband one keeps its wire rate)
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
    agents: tuple[str, ...] = AGENTS
    model_free: tuple[str, ...] = ("echo",)  # default agents that need no models loaded

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
        # How a call of each transport is transferred (the app adds the SIP door's REFER).
        self.transfers: dict[str, Transfer] = {}
        self._http_tools, self._targets = config.toolbox_parts()

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
        if self.config.agent in self.model_free:
            self._ready["models"] = True  # the echo agent needs none; others load on demand
            return
        try:
            await self.providers.load()
            # Evaluate the system prompt now: the first turn of every call starts
            # from it, and a cold prefix costs the first caller ~1 s.
            warm = getattr(self.providers.llm, "warm", None)
            if warm is not None:
                specs = self._toolbox(None).specs  # the prompt of every turn starts with the tools too
                prompt = self.config.system_prompt or SYSTEM_PROMPT
                await (warm(prompt, tools=specs) if specs else warm(prompt))
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

    # -- calls -----------------------------------------------------------------

    def build(self, session: Session, transport: Transport) -> Pipeline:
        """The call's pipeline on ``transport`` (not started); see the module docstring."""
        kind = session.agent_kind
        if kind not in self.agents:
            raise ValueError(f"agent must be one of {', '.join(self.agents)}, not {kind!r}")
        vad: Any
        if self._batcher is not None:
            vad = SileroVad(self._batcher, LISTENING)  # BatcherFull when at capacity
        else:
            vad = WebrtcVad(INBOUND_RATE, mode=3, config=LISTENING)
        try:
            agent, agent_rate = self._agent(session)
            return self._assemble(session, transport, vad, agent, agent_rate)
        except BaseException:
            vad_close = getattr(vad, "close", None)
            if vad_close is not None:
                vad_close()  # the Silero slot goes back, whatever failed
            raise

    def _agent(self, session: Session) -> tuple[Any, int]:
        """The session's agent and the rate of the audio it speaks."""
        kind = session.agent_kind

        def observe(event: AgentEvent) -> None:
            session.events.publish(event.kind, event.turn, **event.data)
            if self.observer is not None:
                self.observer(session, event)

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
            agent = Assistant(
                p.stt, p.llm, p.tts, fallback_tts=p.offline,
                endpointing={State.LISTENING: LISTENING, State.SPEAKING: WHILE_SPEAKING,
                             State.THINKING: LISTENING, State.CALLER_SPEAKING: LISTENING},
                config=AssistantConfig(**words, max_tool_rounds=self.config.max_tool_rounds), observer=observe,
                toolbox=self._toolbox(session),
            )
            agent_rate = p.tts.sample_rate
        return agent, agent_rate

    def _toolbox(self, session: Session | None) -> Toolbox:
        """The assistant's tools on ``session``'s line (none configured: an empty toolbox)."""
        builtins = [b for b in self.config.tools if b in BUILTINS]
        line = SessionLine(session, self.transfers) if session is not None else None
        return Toolbox(builtins, self._http_tools, line, transfer_targets=self._targets,
                       call_id=session.id if session is not None else "")

    def _assemble(self, session: Session, transport: Transport, vad: Any, agent: Any, agent_rate: int) -> Pipeline:
        kind = session.agent_kind
        traits = transport.traits
        media = traits.media
        stages: list[Any] = []
        quality: Quality = "fast" if self.config.resample == "fast" else "hq"
        # A narrowband call is recorded at its wire rate, the caller's side before it
        # is resampled: both sides as they crossed the wire, with nothing to resample.
        narrow = media.rate < INBOUND_RATE
        recording = self._recording(session, media.rate if narrow else RECORDING_RATE)
        if not media.decoded:
            stages.append(Decode(media.codec, name="decode"))
        if recording is not None and narrow:
            stages.append(Tap(recording, CALLER, "record_caller", owns=True))
        if media.rate != INBOUND_RATE:
            stages.append(Resample(media.rate, INBOUND_RATE, quality, name="resample_in"))
        if recording is not None and not narrow:
            stages.append(Tap(recording, CALLER, "record_caller", owns=True))
        stages += [vad, agent]
        if kind != "transcribe":
            if agent_rate != media.rate:
                stages.append(Resample(agent_rate, media.rate, quality, name="resample_out"))
            mode = PlayoutMode.PULL if traits.sink is SinkMode.PULL else PlayoutMode.PUSH
            stages.append(Playout(media.rate, media.frame_ms, mode=mode, far_end_buffer=traits.far_end_buffer,
                                  far_end_clears=traits.can_clear))
            if recording is not None and mode is PlayoutMode.PUSH:  # pulled audio is taken in CallPort.pull
                stages.append(Tap(recording, AGENT, "record_agent"))
            if not media.decoded:
                stages.append(Encode(media.codec, name="encode", frame_ms=media.frame_ms))
        pipeline = Pipeline(stages, transport.send, session_id=session.id, on_end=session.pipeline_ended)
        if recording is not None:
            recording.clock = pipeline.clock.now
        session.pipeline = pipeline
        session.agent = agent
        return pipeline

    def _recording(self, session: Session, rate: int = 16000) -> CallRecording | None:
        """The call's recording at ``rate``, if this call is recorded (``record``, ``record_agents``)."""
        cfg = self.config
        wanted = session.extra.get("record")  # asked for (or against) when the call was created
        if wanted is None:
            wanted = cfg.record or session.agent_kind in cfg.record_agents
        if not wanted:
            return None
        path = Path(cfg.data_dir) / RECORDINGS / f"{session.id}.wav"
        # The records' recorder: one worker process writes every call's (records/recording.py says why).
        recording = StereoRecording(path, time.monotonic, rate=rate)
        session.extra["recording"] = recording
        return cast(CallRecording, recording)  # Tap takes any recording with put() and close()

    async def open(self, session: Session, transport: Transport) -> Pipeline:
        """Build the call's pipeline on ``transport``, attach the transport, start.

        On failure the session is ended (its transport closed) and the error
        raised for the front door to report: ``BatcherFull`` is capacity (see
        ``admission.capacity_error``); ``ValueError`` a bad request."""
        session.endpoint = transport
        session.set_state(SessionState.CONNECTING)
        try:
            pipeline = self.build(session, transport)
            transport.attach(CallPort(session, pipeline))
            await pipeline.start()
        except BaseException as exc:
            await session.end(f"open failed: {type(exc).__name__}")
            raise
        return pipeline


class CallPort:
    """The runtime's side of one call, given to its transport (``Port``)."""

    __slots__ = ("session", "pipeline", "_push", "_playout", "digits", "_recording")

    def __init__(self, session: Session, pipeline: Pipeline) -> None:
        self.session = session
        self.pipeline = pipeline
        self._push = pipeline.push
        self._playout = pipeline.stage("playout")
        self.digits = 0
        self._recording = session.extra.get("recording")

    def receive(self, frame: Audio | Payload | Dtmf) -> None:
        if type(frame) is Dtmf:
            self.digits += 1
        self._push(frame)

    def connected(self) -> None:
        self.session.events.publish("transport", state="connected")
        self.session.set_state(SessionState.ACTIVE)

    def closed(self, reason: str) -> None:
        self.session.events.publish("transport", state="closed", reason=reason)
        self.session.end_soon(reason if is_peer_end(reason) else f"transport closed: {reason}")

    def played(self, name: str) -> None:
        self.pipeline.feedback.publish(Played(Mark(name), self.pipeline.clock.now(), confirmed=True))

    async def pull(self) -> Audio | None:
        playout = self._playout
        if not isinstance(playout, Playout) or not self.pipeline.running:
            await self.pipeline.clock.sleep_until(self.pipeline.clock.now() + 0.02)
            return None
        audio = await playout.pull()
        if audio is not None and self._recording is not None:
            self._recording.put(AGENT, audio)  # what the peer's clock took: what the caller hears
        return audio
