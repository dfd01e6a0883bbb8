"""Transports: each turns a connection into a source and a sink of frames.

``base`` is the contract every transport implements. ``DOORS`` registers each
transport's front door by name, as ``"module:factory"`` (``factory(config) ->
Door``): the control app mounts every registered door's routes and starts its
listener. A new transport is one module here and one line below.
"""

__all__ = ["DOORS"]

DOORS: dict[str, str] = {
    "webrtc": "voxline.transports.webrtc_call:door",
    "loopback": "voxline.transports.loopback:door",
    "raw": "voxline.transports.streams.raw:door",
    "twilio": "voxline.transports.streams.twilio:door",
    "audiosocket": "voxline.transports.audiosocket.server:door",
    "telnyx": "voxline.transports.streams.telnyx:door",
    "vonage": "voxline.transports.streams.vonage:door",
    "plivo": "voxline.transports.streams.plivo:door",
    "freeswitch": "voxline.transports.streams.freeswitch:door",
    "freeswitch-stream": "voxline.transports.streams.freeswitch:stream_module_door",
    "sip": "voxline.transports.sip_door:door",
    "rtp": "voxline.transports.external_media:door",
}
