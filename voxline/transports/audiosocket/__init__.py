"""Asterisk AudioSocket: a TCP server Asterisk connects to with a call's audio.

``wire`` is the framing (sans-I/O), ``server`` the transport and the door's
listener."""
