"""voxline.codecs: pure audio codecs (no I/O, no asyncio).

PCM is a 1-D native int16 numpy array, mono, at ``Codec.rate``. Get a codec
from the registry (``lookup("G722", 8000)``) or by name (``PCMU``, ``l16(16000)``,
``opus(OpusConfig(rate=16000))``), then one ``encoder()``/``decoder()`` per stream.
"""

from voxline.codecs.base import (
    MAX_PAYLOAD_BYTES,
    Codec,
    CodecError,
    Concealer,
    Decoder,
    Encoder,
    Pcm,
)
from voxline.codecs.g711 import PCMA, PCMU, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from voxline.codecs.g722 import G722, G722Decoder, G722Encoder
from voxline.codecs.l16 import l16
from voxline.codecs.opus import OPUS, OPUS_FMTP, OpusConfig, OpusDecoder, OpusEncoder, opus
from voxline.codecs.registry import KNOWN, by_static_pt, lookup

__all__ = [
    "G722",
    "KNOWN",
    "MAX_PAYLOAD_BYTES",
    "OPUS",
    "OPUS_FMTP",
    "PCMA",
    "PCMU",
    "Codec",
    "CodecError",
    "Concealer",
    "Decoder",
    "Encoder",
    "G722Decoder",
    "G722Encoder",
    "OpusConfig",
    "OpusDecoder",
    "OpusEncoder",
    "Pcm",
    "alaw_decode",
    "alaw_encode",
    "by_static_pt",
    "l16",
    "lookup",
    "opus",
    "ulaw_decode",
    "ulaw_encode",
]
