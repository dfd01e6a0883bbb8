"""voxline's own RTP layer, sans-I/O: pure code over bytes and time.

One concept per module: ``packet`` (RTP packets, sequence arithmetic),
``stream`` (receive state: RFC 3550 A.1/A.3/A.8), ``rtcp`` (SR, RR, SDES, BYE,
RTT), ``schedule`` (when to report), ``dtmf`` (RFC 4733), ``jitter`` (the
adaptive play-out buffer), ``source`` (strict/symmetric RTP, inactivity),
``ports`` (port allocation), ``session`` (one call's stream: all of the above
together) and ``errors``. The asyncio glue that moves the
datagrams lives beside them, not in them.
"""

from voxline.transports.rtp.dtmf import DtmfDigit, DtmfReceiver, TelephoneEvent, tone_packets
from voxline.transports.rtp.errors import DtmfError, PortsExhausted, RtcpError, RtpError
from voxline.transports.rtp.jitter import JitterBuffer, JitterConfig, Lost, conceal_pcm
from voxline.transports.rtp.packet import HeaderExtension, RtpPacket, is_rtcp
from voxline.transports.rtp.ports import PortAllocator, PortPair
from voxline.transports.rtp.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    SenderReport,
    SourceDescription,
    build_compound,
    parse_compound,
)
from voxline.transports.rtp.schedule import ReportScheduler
from voxline.transports.rtp.session import RtpParams, RtpSession
from voxline.transports.rtp.source import IdleDetector, SourceFilter
from voxline.transports.rtp.stream import ReceiveStream

__all__ = [
    "Bye",
    "DtmfDigit",
    "DtmfError",
    "DtmfReceiver",
    "HeaderExtension",
    "IdleDetector",
    "JitterBuffer",
    "JitterConfig",
    "Lost",
    "PortAllocator",
    "PortPair",
    "PortsExhausted",
    "ReceiveStream",
    "ReceiverReport",
    "ReportBlock",
    "ReportScheduler",
    "RtcpError",
    "RtpError",
    "RtpPacket",
    "RtpParams",
    "RtpSession",
    "SenderReport",
    "SourceDescription",
    "SourceFilter",
    "TelephoneEvent",
    "build_compound",
    "conceal_pcm",
    "is_rtcp",
    "parse_compound",
    "tone_packets",
]
