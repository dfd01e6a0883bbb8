"""Each platform's side of a stream, as its documentation describes it: the
messages it sends (start, media, DTMF, playout confirmations, stop) and how to
read what voxline sends back (audio, marks, the clear)."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp

from voxline.codecs import PCMU, Codec, l16

__all__ = ["Peer", "Telnyx", "Plivo", "Vonage", "AudioFork", "AudioStream", "PEERS"]

SID = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"


class Peer:
    path = ""
    query = ""
    protocols: tuple[str, ...] = ()
    codec: Codec = PCMU
    confirms = True
    clears = True
    stops = True  # the platform sends a stop message (else it closes the socket)

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0

    async def json(self, **msg: Any) -> None:
        await self.ws.send_str(json.dumps(msg))

    async def start(self, **params: str) -> None: ...
    async def media(self, payload: bytes) -> None: ...
    async def dtmf(self, digit: str) -> None: ...
    async def played(self, name: str) -> None: ...
    async def stop(self) -> None:
        await self.ws.close()

    # what voxline sent, from a Collector's texts and binary frames
    @staticmethod
    def audio_out(texts: list[dict[str, Any]], binary: list[bytes]) -> list[bytes]:
        return []

    @staticmethod
    def marks_out(texts: list[dict[str, Any]]) -> list[str]:
        return []

    @staticmethod
    def cleared(texts: list[dict[str, Any]]) -> bool:
        return False


class Telnyx(Peer):
    """https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket"""

    path = "/v1/streams/telnyx"

    def _n(self) -> str:
        self.seq += 1
        return str(self.seq)

    async def start(self, **params: str) -> None:
        await self.json(event="connected", version="1.0.0")
        await self.json(event="start", sequence_number=self._n(), stream_id=SID, start={
            "user_id": "3E6F995F-85F7-4705-9741-53B116D28237", "call_control_id": "v2:T02llQxIyaRkhfRKx",
            "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f", "from": "+13122010094",
            "to": "+13122123456", "tags": ["TAG1"], "client_state": "aGF2ZQ==", "custom_parameters": params,
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}})

    async def media(self, payload: bytes) -> None:
        n = self._n()
        await self.json(event="media", sequence_number=n, stream_id=SID, media={
            "track": "inbound", "chunk": n, "timestamp": n, "payload": base64.b64encode(payload).decode()})

    async def dtmf(self, digit: str) -> None:
        await self.json(event="dtmf", sequence_number=self._n(), stream_id=SID,
                        occurred_at="2024-09-10T09:57:39.001Z", dtmf={"digit": digit})

    async def played(self, name: str) -> None:
        await self.json(event="mark", sequence_number=self._n(), stream_id=SID, mark={"name": name})

    async def stop(self) -> None:
        await self.json(event="stop", sequence_number=self._n(), stream_id=SID,
                        stop={"user_id": "3E6F995F", "call_control_id": "v2:T02llQxIyaRkhfRKx"})

    @staticmethod
    def audio_out(texts: list[dict[str, Any]], binary: list[bytes]) -> list[bytes]:
        return [base64.b64decode(t["media"]["payload"]) for t in texts if t.get("event") == "media"]

    @staticmethod
    def marks_out(texts: list[dict[str, Any]]) -> list[str]:
        return [t["mark"]["name"] for t in texts if t.get("event") == "mark"]

    @staticmethod
    def cleared(texts: list[dict[str, Any]]) -> bool:
        return {"event": "clear"} in texts


class Plivo(Peer):
    """https://www.plivo.com/docs/voice/audio-streaming/audio-streaming"""

    path = "/v1/streams/plivo"
    stops = False

    async def start(self, **params: str) -> None:
        self.seq += 1
        await self.json(event="start", sequenceNumber=self.seq, start={
            "callId": "12345678-1234-1234-1234-123456789abc", "streamId": SID, "accountId": "MAXXXXXXXXXXXXXXXXXX",
            "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}},
            extra_headers=";".join(f"{k}={v}" for k, v in params.items()))

    async def media(self, payload: bytes) -> None:
        self.seq += 1
        await self.json(event="media", sequenceNumber=self.seq, streamId=SID, media={
            "track": "inbound", "timestamp": str(self.seq * 20), "chunk": self.seq,
            "payload": base64.b64encode(payload).decode()})

    async def dtmf(self, digit: str) -> None:
        self.seq += 1
        await self.json(event="dtmf", sequenceNumber=self.seq, streamId=SID,
                        dtmf={"track": "inbound", "digit": digit, "timestamp": "1000"})

    async def played(self, name: str) -> None:
        self.seq += 1
        await self.json(event="playedStream", sequenceNumber=self.seq, streamId=SID, name=name)

    @staticmethod
    def audio_out(texts: list[dict[str, Any]], binary: list[bytes]) -> list[bytes]:
        out = [t for t in texts if t.get("event") == "playAudio"]
        assert all(t["media"]["contentType"] == "audio/x-mulaw" and t["media"]["sampleRate"] == 8000 for t in out)
        return [base64.b64decode(t["media"]["payload"]) for t in out]

    @staticmethod
    def marks_out(texts: list[dict[str, Any]]) -> list[str]:
        return [t["name"] for t in texts if t.get("event") == "checkpoint" and t.get("streamId") == SID]

    @staticmethod
    def cleared(texts: list[dict[str, Any]]) -> bool:
        return {"event": "clearAudio", "streamId": SID} in texts


class Vonage(Peer):
    """https://developer.vonage.com/en/voice/voice-api/concepts/websockets"""

    path = "/v1/streams/vonage"
    codec = l16(16000, little_endian=True)
    stops = False

    async def start(self, **params: str) -> None:
        await self.json(event="websocket:connected", **{"content-type": "audio/l16;rate=16000"}, **params)

    async def media(self, payload: bytes) -> None:
        await self.ws.send_bytes(payload)

    async def dtmf(self, digit: str) -> None:
        await self.json(event="websocket:dtmf", digit=digit, duration=260)

    async def played(self, name: str) -> None:
        await self.json(event="websocket:notify", payload={"name": name})

    @staticmethod
    def audio_out(texts: list[dict[str, Any]], binary: list[bytes]) -> list[bytes]:
        assert all(len(b) == 640 for b in binary)  # 20 ms at 16 kHz, as Vonage requires
        return binary

    @staticmethod
    def marks_out(texts: list[dict[str, Any]]) -> list[str]:
        return [t["payload"]["name"] for t in texts if t.get("action") == "notify"]

    @staticmethod
    def cleared(texts: list[dict[str, Any]]) -> bool:
        return {"action": "clear"} in texts


class AudioFork(Peer):
    """drachtio-freeswitch-modules, modules/mod_audio_fork/README.md"""

    path = "/v1/streams/freeswitch"
    query = "?rate=16000"
    protocols = ("audio.drachtio.org",)
    codec = l16(16000, little_endian=True)
    confirms = False
    stops = False

    async def start(self, **params: str) -> None:
        await self.ws.send_str(json.dumps({"callid": "a1b2", "from": "2061236666", "to": "6173333456"}))

    async def media(self, payload: bytes) -> None:
        await self.ws.send_bytes(payload)

    async def dtmf(self, digit: str) -> None:  # uuid_audio_fork <uuid> send_text ...
        await self.json(type="dtmf", digit=digit)

    @staticmethod
    def audio_out(texts: list[dict[str, Any]], binary: list[bytes]) -> list[bytes]:
        out = [t["data"] for t in texts if t.get("type") == "playAudio"]
        assert all(d["audioContentType"] == "raw" and d["sampleRate"] == 16000 for d in out)
        return [base64.b64decode(d["audioContent"]) for d in out]

    @staticmethod
    def cleared(texts: list[dict[str, Any]]) -> bool:
        return {"type": "killAudio"} in texts


class AudioStream(AudioFork):
    """amigniter/mod_audio_stream, README"""

    path = "/v1/streams/freeswitch-stream"
    protocols = ()
    clears = False

    @staticmethod
    def audio_out(texts: list[dict[str, Any]], binary: list[bytes]) -> list[bytes]:
        out = [t["data"] for t in texts if t.get("type") == "streamAudio"]
        assert all(d["audioDataType"] == "raw" and d["sampleRate"] == 16000 for d in out)
        return [base64.b64decode(d["audioData"]) for d in out]


PEERS = (Telnyx, Plivo, Vonage, AudioFork, AudioStream)
