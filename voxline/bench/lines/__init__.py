"""The caller's side of each transport: a ``Line`` sends 20 ms frames of caller
audio and tells its ``Listener`` what came back (audio with its arrival time,
the far end being cleared, the session's events).

``open_line(name, target, agent, listener)`` picks one by transport name."""

from __future__ import annotations

import importlib

from .base import Line, Listener, Target

__all__ = ["Line", "Listener", "Target", "TRANSPORTS", "open_line"]

TRANSPORTS: dict[str, str] = {
    "inprocess": "voxline.bench.lines.inprocess:InProcessLine",
    "raw": "voxline.bench.lines.raw:RawLine",
    "twilio": "voxline.bench.lines.twilio:TwilioLine",
    "audiosocket": "voxline.bench.lines.audiosocket:AudioSocketLine",
    "webrtc": "voxline.bench.lines.webrtc:WebRTCLine",
    "sip": "voxline.bench.lines.sip:SipLine",
}


def open_line(name: str, target: Target, agent: str | None, listener: Listener) -> Line:
    """A line of transport ``name`` (not yet open)."""
    try:
        module, _, cls = TRANSPORTS[name].partition(":")
    except KeyError:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {name!r}") from None
    line: Line = getattr(importlib.import_module(module), cls)(target, agent, listener)
    return line
