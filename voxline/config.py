"""Service configuration: one frozen dataclass, built once from a TOML file, the
environment (``VOXLINE_*``) and command-line flags, in that order of precedence
(flags win).

Sections of the TOML file map to the nested dataclasses (``[providers]``,
``[providers.llm]`` ...); top-level keys to ``ServiceConfig``'s own fields. An
environment variable names a field by its path: ``VOXLINE_HTTP_PORT``,
``VOXLINE_MAX_SESSIONS``, ``VOXLINE_PROVIDERS__LLM__MODEL`` (double underscore
between levels). Unknown keys are errors, not silently ignored.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ServiceConfig",
    "ProvidersConfig",
    "SttConfig",
    "LlmConfig",
    "TtsConfig",
    "StreamsConfig",
    "HttpToolConfig",
    "ConfigError",
    "load_config",
]

ENV_PREFIX = "VOXLINE_"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong kind; names the key."""


@dataclass(frozen=True, slots=True)
class SttConfig:
    engine: str = "whisper"  # whisper | deepgram
    model: str = "tiny.en"  # whisper model name or local path
    api_key: str = ""
    url: str = ""
    beam_size: int = 5
    # Whisper re-decodes the caller's words this often while they speak (0: never):
    # the demo page shows them, and the LLM evaluates them ahead (agent prefill).
    interim_ms: int = 300


@dataclass(frozen=True, slots=True)
class LlmConfig:
    engine: str = "llama"  # llama | openai
    model: str = "qwen2.5-0.5b-instruct"  # GGUF model name or path; remote model id
    base_url: str = ""
    api_key: str = ""
    max_tokens: int = 120
    temperature: float = 0.6
    # llama.cpp threads. 1 by default: this build's OpenMP threads spin while
    # waiting, and 2 collapse when anything else needs a core (see llm/llama.py).
    threads: int = 1
    # Threads while the model is the inference executor's only job (the first
    # words of an answer, as a rule); 0: never more than ``threads``.
    burst_threads: int = 2
    fallback: tuple[str, ...] = ()  # further engines to try, e.g. ("llama",)


@dataclass(frozen=True, slots=True)
class TtsConfig:
    engine: str = "piper"  # piper | espeak | openai | elevenlabs | deepgram
    voice: str = "joe-medium"
    api_key: str = ""
    base_url: str = ""
    # Characters per synthesis: longer texts are cut at sentences, then clauses,
    # then words, and synthesised piece by piece (providers/chunked.py).
    max_chars: int = 250


@dataclass(frozen=True, slots=True)
class ProvidersConfig:
    stt: SttConfig = field(default_factory=SttConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)


@dataclass(frozen=True, slots=True)
class StreamsConfig:
    """WebSocket media streams (``/v1/streams/...``): the bounds of every stream,
    and Twilio's request signature (checked when ``twilio_auth_token`` is set)."""

    max_message: int = 64 * 1024  # bytes of one WebSocket message
    heartbeat: float = 10.0  # s between pings; no pong within half of it and the peer is gone
    start_timeout: float = 5.0  # s from the upgrade to the stream's start message
    idle_timeout: float = 10.0  # s without any message from the peer
    max_faults: int = 10  # malformed messages tolerated before the stream is closed
    twilio_auth_token: str = ""
    # The wss:// base URL the platform connects to (as it signs it), when a proxy
    # in front of voxline changes scheme or host; empty: from the request.
    public_url: str = ""


@dataclass(frozen=True, slots=True)
class HttpToolConfig:
    """An HTTP tool the assistant may call (``[[http_tools]]``): voxline POSTs
    ``{"tool", "call_id", "arguments"}`` to ``url`` and gives the reply to the LLM."""

    name: str = ""
    description: str = ""
    url: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    timeout: float = 5.0  # s: past it the tool counts as failed (the LLM is told)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    http_port: int = 8080
    agent: str = "assistant"  # assistant | echo | transcribe
    max_sessions: int = 100
    vad: str = "silero"  # silero | webrtc
    # Paced resampling of call audio: hq (libswresample, band-limited) or fast
    # (soxr QQ, a third of the cost, no anti-aliasing: only for audio already
    # band-limited, e.g. narrowband telephony up to 16 kHz and back).
    resample: str = "hq"
    api_tokens: tuple[str, ...] = ()
    jwt_public_key: str = ""  # PEM (Ed25519), or a path to one
    jwt_revoked: tuple[str, ...] = ()  # revoked token ids (jti)
    jwt_audience: str = "voxline"  # the aud a JWT must name ("": aud not checked)
    jwt_issuer: str = ""  # the iss a JWT must name ("": any)
    jwt_max_lifetime: float = 86400.0  # s: exp may be at most this far past iat (or now)
    sessions_per_minute: float = 30.0  # per token: session creation rate limit
    session_burst: int = 10
    # Concurrent sessions one token (or one SIP/TCP source) may hold, and one
    # tenant; 0: only max_sessions. Pending: admitted, not yet connected.
    max_sessions_per_token: int = 50
    max_sessions_per_tenant: int = 0
    max_pending_per_token: int = 5
    pending_timeout: float = 10.0  # s a session may take to connect its media
    # HTTP connections: the most open at once (beyond it a 503 and close); how long
    # one may stay open with no request in progress (idle keep-alive, or a request
    # head still arriving); how long a request body may take to arrive.
    max_connections: int = 1000
    http_idle_timeout: float = 15.0
    http_body_timeout: float = 10.0
    ice_hosts: tuple[str, ...] = ()  # host candidates to offer, e.g. ("127.0.0.1",)
    drain_timeout: float = 30.0
    log_format: str = "json"  # json | text
    log_level: str = "INFO"
    system_prompt: str = ""
    greeting: str = ""  # empty: the default greeting
    greet: bool = True  # speak a greeting when a call starts
    sip_host: str = "127.0.0.1"  # SIP (UDP and TCP) and RTP listen here; the address put in SDP
    sip_port: int = 5060  # 0: any free port
    rtp_ports: str = "20000-20999"  # first-last, even/odd pairs for RTP/RTCP
    rtp_timeout: float = 30.0  # s without RTP or RTCP before a call is ended
    sip_allow: tuple[str, ...] = ()  # peer networks allowed to call, e.g. ("10.0.0.0/8",); empty: any
    sip_codecs: tuple[str, ...] = ()  # codec preference by SDP name (PCMU, PCMA, G722, opus); empty: that order
    # Calls out (POST /v1/calls) and a trunk. The credentials answer digest
    # challenges (401/407) of the trunk only: calls through the outbound proxy,
    # or to the trunk's domain, and REGISTER; never a target anyone may dial.
    sip_trunk_user: str = ""
    sip_trunk_password: str = ""
    sip_trunk_domain: str = ""  # our From domain and the trunk's host; "": sip_host, no trunk by name
    sip_outbound_proxy: str = ""  # "host[:port]" (an IP address) every call out goes through; "": straight
    sip_register: str = ""  # registrar URI, e.g. "sip:10.0.0.5"; "": no registration
    sip_register_expires: int = 3600  # s asked for (60-86400); refreshed at 80% of what is granted
    sip_ring_timeout: float = 60.0  # s a call out may take to be answered (then CANCEL)
    sip_dial_allow: tuple[str, ...] = ()  # networks calls out may go to without a proxy, e.g. ("10.0.0.0/8",); empty: any
    providers: ProvidersConfig = field(default_factory=ProvidersConfig)
    streams: StreamsConfig = field(default_factory=StreamsConfig)
    audiosocket_host: str = "127.0.0.1"  # AudioSocket carries no credentials: keep it on a trusted network
    audiosocket_port: int = 9092  # -1: no AudioSocket listener
    audiosocket_agents: tuple[str, ...] = ()  # "<uuid>=<agent>": the agent for the call with that UUID
    # Call records: SQLite (WAL) in data_dir unless database_url names a database
    # (postgresql://user@host/db, or sqlite:///path); "" with records = false: none.
    data_dir: str = "./voxline-data"
    database_url: str = ""
    records: bool = True
    records_backlog: int = 10000  # rows waiting for an unreachable database before the oldest are dropped
    retention_days: float = 0.0  # records older than this are deleted (hourly); 0: kept forever
    # Stereo WAV of every call (caller left, agent right) in data_dir/recordings;
    # or only the calls of the agents named here.
    record: bool = False
    record_agents: tuple[str, ...] = ()
    # Webhooks (call.started, call.ended, turn.completed, dtmf, transfer) POSTed
    # here, signed with HMAC-SHA256 by webhook_secret; "": none.
    webhook_url: str = ""
    webhook_secret: str = ""
    # The assistant's tools: built-ins offered to the LLM (end_call, transfer,
    # send_dtmf), HTTP tools, where transfer may go ("name=sip:uri"; empty: any
    # sip: URI the model names), and the rounds of tool calls one reply may make.
    tools: tuple[str, ...] = ()
    http_tools: tuple[HttpToolConfig, ...] = ()
    transfer_targets: tuple[str, ...] = ()
    max_tool_rounds: int = 3

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_tokens or self.jwt_public_key)

    def __post_init__(self) -> None:
        if self.resample not in ("hq", "fast"):
            raise ConfigError(f"resample must be hq or fast, got {self.resample!r}")
        _check_sip_trunk(self)
        _check_tools(self)

    def toolbox_parts(self) -> tuple[list[Any], dict[str, str]]:
        """The HTTP tools (``voxline.agent.toolbox.HttpTool``) and the transfer targets by name."""
        from voxline.agent.toolbox import HttpTool

        http = [HttpTool(t.name, t.description, t.url, t.parameters, t.timeout) for t in self.http_tools]
        targets = dict(t.split("=", 1) for t in self.transfer_targets)
        return http, {k.strip(): v.strip() for k, v in targets.items()}


def _check_tools(c: ServiceConfig) -> None:
    from voxline.agent.toolbox import BUILTINS

    for name in c.tools:
        if name not in BUILTINS:
            raise ConfigError(f"tools: {name!r} is not a built-in tool ({', '.join(BUILTINS)})")
    for t in c.transfer_targets:
        name, sep, uri = t.partition("=")
        if not sep or not name.strip() or not uri.strip().startswith("sip:"):
            raise ConfigError(f"transfer_targets: {t!r} is not name=sip:uri")
    if not 1 <= c.max_tool_rounds <= 10:
        raise ConfigError(f"max_tool_rounds must be 1-10, got {c.max_tool_rounds}")
    try:
        http, _ = c.toolbox_parts()
    except ValueError as exc:
        raise ConfigError(f"http_tools: {exc}") from exc
    names = [t.name for t in http]
    if len(set(names)) != len(names):
        raise ConfigError("http_tools: two tools have the same name")


def _check_sip_trunk(c: ServiceConfig) -> None:
    """The outbound SIP settings, checked once here so the door can trust them."""
    from voxline.transports.sip.errors import SipParseError
    from voxline.transports.sip.uri import SipUri, parse_uri

    if c.sip_trunk_password and not c.sip_trunk_user:
        raise ConfigError("sip_trunk_password is set but sip_trunk_user is not")
    for key, text in (("sip_trunk_user", c.sip_trunk_user), ("sip_trunk_password", c.sip_trunk_password)):
        if len(text) > 256 or any(ch in text for ch in '\r\n"\\'):
            raise ConfigError(f"{key} must be at most 256 characters without quotes, backslashes or line breaks")
    checks = (("sip_trunk_domain", f"sip:{c.sip_trunk_domain}" if c.sip_trunk_domain else ""),
              ("sip_outbound_proxy", f"sip:{c.sip_outbound_proxy}" if c.sip_outbound_proxy else ""),
              ("sip_register", c.sip_register))
    for key, text in checks:
        if not text:
            continue
        try:
            uri = parse_uri(text, key)
        except SipParseError as exc:
            raise ConfigError(f"{key}: {exc}") from exc
        if not isinstance(uri, SipUri) or uri.scheme != "sip" or (key != "sip_register" and uri.user is not None):
            raise ConfigError(f"{key} must be a sip: host[:port], got {text!r}")
    if c.sip_register and not c.sip_trunk_user:
        raise ConfigError("sip_register needs sip_trunk_user (the user registered)")
    if not 60 <= c.sip_register_expires <= 86400:
        raise ConfigError(f"sip_register_expires must be 60-86400 s, got {c.sip_register_expires}")
    for net in c.sip_dial_allow:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError as exc:
            raise ConfigError(f"sip_dial_allow: {exc}") from exc
    if not 0 < c.sip_ring_timeout <= 600:
        raise ConfigError(f"sip_ring_timeout must be more than 0 and at most 600 s, got {c.sip_ring_timeout}")


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServiceConfig:
    """File, then environment, then ``overrides`` (flags: dotted or flat keys)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                values = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    env = os.environ if env is None else env
    for key, raw in env.items():
        if key.startswith(ENV_PREFIX) and key != "VOXLINE_CACHE":
            dotted = key[len(ENV_PREFIX) :].lower().replace("__", ".")
            _set_path(values, dotted, raw)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_path(values, key, value)
    config: ServiceConfig = _build(ServiceConfig, values, "")
    return config


def _set_path(values: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = values
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
    node[parts[-1]] = value


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown configuration key {prefix}{sorted(unknown)[0]}")
    kwargs = {}
    for name in known & set(values):
        kwargs[name] = _coerce(hints[name], values[name], prefix + name)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is tuple and args and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list of tables")
        return tuple(_build(args[0], v, f"{key}[{i}].") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table")
        return dict(value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list")
        return tuple(str(v) for v in value)
    if origin in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        if hint in (int, float, str):
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return hint(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}") from exc
    return value


def read_key(value: str) -> str:
    """A PEM given inline, or a path to a file holding one."""
    if value.strip().startswith("-----BEGIN"):
        return value
    return Path(value).read_text()
