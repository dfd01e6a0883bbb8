"""What the assistant can do on a call besides talking: its tools.

Built-in tools act on the call through its ``Line`` (the session's transport,
in its own terms):

- ``end_call``: a goodbye, then hang up (SIP BYE, the stream's close...);
- ``transfer(target)``: hand the caller on (SIP REFER; a transport without a way
  to do it refuses, and the model is told why so it can say so);
- ``send_dtmf(digits)``: press keys towards the far end (an IVR).

HTTP tools are declared in the configuration (name, description, JSON-schema
parameters, URL, deadline): the arguments are POSTed as JSON, and the reply
(JSON, or text) goes back to the model.

Every call is bounded: a deadline each (``HttpTool.timeout``, ``LINE_TIMEOUT``
for the built-ins), a cap on the bytes of a reply, and a failure (a refusal, a
timeout, a 500, an unknown tool, unreadable arguments) is an ``Outcome`` with
``error``: the model is told, the turn goes on, the call is never harmed.
``end_call`` and a possible ``transfer`` act once the reply that announces them
has been played (``after``), so the caller hears the goodbye.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

from voxline.providers.http import shared_session
from voxline.providers.llm.tools import ToolCall, ToolSpec

__all__ = [
    "BUILTINS", "END_CALL", "TRANSFER", "SEND_DTMF", "HttpTool", "Line", "LineRefused", "Outcome", "Toolbox",
    "NAME_PATTERN",
]

log = logging.getLogger(__name__)

END_CALL = "end_call"
TRANSFER = "transfer"
SEND_DTMF = "send_dtmf"
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
MAX_REPLY = 16_384  # bytes of an HTTP tool's reply given to the model (more is cut)
LINE_TIMEOUT = 5.0  # s for a built-in to act on the line
DTMF_DIGITS = re.compile(r"^[0-9*#A-Da-d]{1,32}$")

BUILTINS: dict[str, ToolSpec] = {
    END_CALL: ToolSpec(END_CALL, "End the phone call (hang up) once the caller is done or asks to end the call. "
                       "Say goodbye in the same reply.",
                       {"type": "object", "properties": {
                           "goodbye": {"type": "string", "description": "What to say before hanging up"}}}),
    TRANSFER: ToolSpec(TRANSFER, "Transfer the caller to a person or another number when they ask for one.",
                       {"type": "object", "properties": {
                           "target": {"type": "string", "description": "Where to transfer: a SIP URI or number"}},
                        "required": ["target"]}),
    SEND_DTMF: ToolSpec(SEND_DTMF, "Press telephone keys (DTMF) towards the other side, e.g. to answer a menu.",
                        {"type": "object", "properties": {
                            "digits": {"type": "string", "description": "Keys to press: 0-9, * and #"}},
                         "required": ["digits"]}),
}


class LineRefused(Exception):
    """The line cannot do this (not a SIP call, not answered yet...); the message
    says why, in words the agent can repeat to the caller."""


class Line(Protocol):
    """What the agent may do to its call (the control layer's ``SessionLine``)."""

    def hang_up(self, reason: str) -> None: ...

    def check_transfer(self, target: str) -> None:
        """Raise ``LineRefused`` if a transfer to ``target`` cannot be made now."""
        ...

    def transfer(self, target: str) -> None: ...

    def send_dtmf(self, digits: str) -> None: ...


@dataclass(frozen=True, slots=True)
class HttpTool:
    """A tool the configuration declares: POST the arguments to ``url``."""

    name: str
    description: str
    url: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name) or self.name in BUILTINS:
            raise ValueError(f"tool name {self.name!r} must match {NAME_PATTERN.pattern} and not be a built-in")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"tool {self.name}: url must be http:// or https://, not {self.url!r}")
        if not 0 < self.timeout <= 60:
            raise ValueError(f"tool {self.name}: timeout must be more than 0 and at most 60 s, got {self.timeout}")
        if not isinstance(self.parameters, Mapping) or self.parameters.get("type", "object") != "object":
            raise ValueError(f"tool {self.name}: parameters must be a JSON schema of type object")

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, dict(self.parameters))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a tool call came to: ``result`` for the model (it has ``error`` when it
    failed), and ``after`` ("end_call", "transfer"): act once the reply is played."""

    call: ToolCall
    result: dict[str, Any]
    seconds: float
    after: str | None = None
    target: str = ""  # a transfer's, as the line dials it
    repeated: bool = False  # the same call as one before in this reply: not run again

    @property
    def ok(self) -> bool:
        return "error" not in self.result


class Toolbox:
    """The tools of one call: built-ins named in ``builtins`` and ``http`` tools."""

    def __init__(self, builtins: Sequence[str] = (), http: Sequence[HttpTool] = (), line: Line | None = None,
                 *, transfer_targets: Mapping[str, str] | None = None, session: aiohttp.ClientSession | None = None,
                 call_id: str = "") -> None:
        unknown = [b for b in builtins if b not in BUILTINS]
        if unknown:
            raise ValueError(f"unknown built-in tool {unknown[0]!r} (known: {', '.join(BUILTINS)})")
        self.builtins = tuple(dict.fromkeys(builtins))
        self.http = {t.name: t for t in http}
        self.line = line
        # Where the model may transfer to, by name (sales -> sip:sales@pbx); empty: any target the line takes.
        self.targets = dict(transfer_targets or {})
        self.call_id = call_id
        self._session = session

    def __bool__(self) -> bool:
        return bool(self.builtins or self.http)

    @property
    def specs(self) -> list[ToolSpec]:
        return [*(self._builtin_spec(b) for b in self.builtins), *(t.spec for t in self.http.values())]

    def _builtin_spec(self, name: str) -> ToolSpec:
        spec = BUILTINS[name]
        if name != TRANSFER or not self.targets:
            return spec
        target = {"type": "string", "enum": sorted(self.targets), "description": "Who to transfer the caller to"}
        return ToolSpec(spec.name, spec.description, {**spec.parameters, "properties": {"target": target}})

    async def run(self, call: ToolCall) -> Outcome:
        """Run ``call`` within its deadline; never raises (but for cancellation)."""
        started = time.monotonic()
        after: str | None = None
        target = ""
        try:
            if call.error is not None:
                raise ToolFailed(f"the call could not be read: {call.error}")
            if call.name in self.builtins:
                result, after, target = self._builtin(call)
            elif call.name in self.http:
                result = await self._post(self.http[call.name], call)
            else:
                raise ToolFailed(f"there is no tool named {call.name!r}")
        except ToolFailed as exc:
            result = {"error": str(exc)}
        except LineRefused as exc:
            result = {"error": str(exc)}
        except Exception as exc:  # a tool's fault never reaches the call
            log.warning("tool %s failed: %r", call.name, exc)
            result = {"error": f"the tool failed ({type(exc).__name__})"}
        return Outcome(call, result, time.monotonic() - started, after, target)

    # -- built-ins ---------------------------------------------------------------

    def _builtin(self, call: ToolCall) -> tuple[dict[str, Any], str | None, str]:
        line = self.line
        if line is None:
            raise LineRefused("this call cannot be controlled from here")
        args = call.arguments
        if call.name == END_CALL:
            return {"ok": True, "note": "the call ends after your goodbye"}, END_CALL, ""
        if call.name == TRANSFER:
            target = args.get("target")
            if not isinstance(target, str) or not target.strip():
                raise ToolFailed("transfer needs a target")
            target = self._target(target.strip())
            line.check_transfer(target)
            return {"ok": True, "note": "the transfer starts once you have told the caller"}, TRANSFER, target
        digits = args.get("digits")
        if not isinstance(digits, str) or not DTMF_DIGITS.match(digits.replace(" ", "")):
            raise ToolFailed("digits must be 1 to 32 of 0-9, *, #, A-D")
        line.send_dtmf(digits.replace(" ", "").upper())
        return {"ok": True, "sent": digits.replace(" ", "").upper()}, None, ""

    def _target(self, asked: str) -> str:
        """What a transfer to ``asked`` dials: a configured name's URI (only those, when names are configured)."""
        if not self.targets:
            return asked
        for name, uri in self.targets.items():
            if asked.lower() == name.lower() or asked == uri:
                return uri
        raise ToolFailed(f"there is no transfer target {asked!r}; the targets are {', '.join(sorted(self.targets))}")

    # -- HTTP tools --------------------------------------------------------------

    async def _post(self, tool: HttpTool, call: ToolCall) -> dict[str, Any]:
        session = self._session or shared_session()
        body = orjson.dumps({"tool": tool.name, "call_id": self.call_id, "arguments": call.arguments})
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/plain"}
        try:
            async with asyncio.timeout(tool.timeout):
                async with session.post(tool.url, data=body, headers=headers, allow_redirects=False) as resp:
                    data = await resp.content.read(MAX_REPLY + 1)
                    status = resp.status
                    ctype = resp.headers.get("Content-Type", "")
        except TimeoutError:
            raise ToolFailed(f"{tool.name} did not answer within {tool.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise ToolFailed(f"{tool.name} could not be reached ({type(exc).__name__})") from None
        if not 200 <= status < 300:
            raise ToolFailed(f"{tool.name} answered HTTP {status}")
        cut = len(data) > MAX_REPLY
        data = data[:MAX_REPLY]
        if ctype.startswith("application/json") and not cut:
            try:
                value = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise ToolFailed(f"{tool.name} answered malformed JSON") from None
            return value if isinstance(value, dict) else {"result": value}
        return {"result": data.decode("utf-8", "replace"), **({"truncated": True} if cut else {})}


class ToolFailed(Exception):
    """A tool call failed; the message is what the model is told."""
