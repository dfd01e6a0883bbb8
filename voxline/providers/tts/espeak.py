"""espeak-ng speaking in-process: the light voice that is always there.

It is the "offline voice" the agent apologises with when every TTS provider has
failed: no model file, < 1 ms to first audio, ~0.1% of a core (MODELS.md). It
is robotic, and whisper still understands it.

The library is espeak-ng through ctypes, in synchronous mode: ``espeak_Synth``
runs in a pool thread and calls back with ~``chunk_ms`` of int16 audio at a
time, which goes to the event loop through a bounded ``ThreadChannel`` as it is
produced; the callback returns 1 (abort) once the consumer has cancelled.

Which library: by default the copy that the ``espeakng-loader`` wheel ships,
with its data, so a pip install is enough; else Debian's ``libespeak-ng1``
(``libespeak-ng.so.1`` with ``/usr/lib/*/espeak-ng-data``). Either is opened
with ctypes' default ``RTLD_LOCAL``: piper's ``espeakbridge`` links its own
copy of espeak-ng statically and exports the same symbol names, and local
binding keeps the two instances (and their global state) apart.

espeak-ng keeps global state and is not re-entrant: one engine per process
(``executor.load_shared``), one synthesis at a time (a model slot of 1). Both
libraries carry the soname ``libespeak-ng.so.1``, and the dynamic loader hands
back an already loaded object of that soname whatever path is asked for, so a
second engine would re-initialise the first one's state: the first library
loaded in a process is the one every ``EspeakTTS`` uses (a different
``library`` asked for later is logged and ignored).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import glob
import importlib.util
import logging
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from ..base import PCM, Deadlines, ProviderError
from ..executor import (
    AsyncSlots,
    ChannelClosed,
    InferenceExecutor,
    ThreadChannel,
    load_shared,
    receive,
    shared_executor,
)

__all__ = ["EspeakConfig", "EspeakTTS", "find_espeak"]

log = logging.getLogger(__name__)

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_INITIALIZE_DONT_EXIT: Final = 0x8000
_CHARS_UTF8: Final = 1
_ENDPAUSE: Final = 0x1000
_POS_CHARACTER: Final = 1
_RATE: Final = 1
_VOLUME: Final = 2
_PITCH: Final = 3
_EE_OK: Final = 0

_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True, slots=True)
class EspeakConfig:
    voice: str = "en-us"
    words_per_minute: int = 175
    pitch: int = 50  # 0-100
    volume: int = 100  # 0-200
    chunk_ms: int = 60  # audio per callback
    library: str | None = None  # path to libespeak-ng; None: espeakng-loader, then the system's
    data_dir: str | None = None  # the espeak-ng-data folder (or its parent)
    queue_chunks: int = 16


def find_espeak(config: EspeakConfig) -> tuple[str, str | None]:
    """(library, data path) to load: the configured one, the wheel's, or Debian's."""
    if config.library:
        return config.library, config.data_dir
    spec = importlib.util.find_spec("espeakng_loader")  # located, not imported
    if spec is not None and spec.submodule_search_locations:
        base = Path(next(iter(spec.submodule_search_locations)))
        lib, data = base / "libespeak-ng.so", base / "espeak-ng-data"
        if lib.is_file() and data.is_dir():
            return str(lib), config.data_dir or str(data)
    system = ctypes.util.find_library("espeak-ng")
    if system is None:
        raise ProviderError(
            "espeak",
            "libespeak-ng not found: pip install espeakng-loader==0.2.4 (or apt-get install libespeak-ng1)",
            retryable=False,
        )
    data_dirs = sorted(glob.glob("/usr/lib/*/espeak-ng-data")) + ["/usr/share/espeak-ng-data"]
    found = next((d for d in data_dirs if Path(d).is_dir()), None)
    return system, config.data_dir or found


class _Engine:
    """One initialised libespeak-ng; synthesises for one caller at a time."""

    def __init__(self, library: str, data: str | None, chunk_ms: int) -> None:
        self.library = library
        self.lib = ctypes.CDLL(library)  # RTLD_LOCAL: see the module docstring
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_SetSynthCallback.argtypes = [_Callback]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        if data is not None and Path(data).name == "espeak-ng-data":
            data = str(Path(data).parent)  # espeak wants the folder that holds espeak-ng-data
        rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, chunk_ms, data.encode() if data else None, _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise ProviderError("espeak", f"espeak_Initialize failed ({rate}) with data {data}", retryable=False)
        self.sample_rate: int = rate
        # Kept referenced for the library's lifetime: espeak holds the pointer.
        self._callback = _Callback(self._on_audio)
        self.lib.espeak_SetSynthCallback(self._callback)
        self.slots = AsyncSlots(1)
        self._lock = threading.Lock()
        self._sink: ThreadChannel[PCM] | None = None
        log.info("espeak-ng %s at %d Hz, data %s", library, rate, data)

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int | None) -> int:
        sink = self._sink
        if sink is None:
            return 1
        if count > 0 and wav:
            chunk = np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16, copy=True)
            try:
                sink.put(chunk)
            except ChannelClosed:
                return 1  # abort the synthesis
        return 1 if sink.cancelled else 0

    def speak(self, text: str, config: EspeakConfig, sink: ThreadChannel[PCM]) -> None:
        with self._lock:  # the library's state is global: one synthesis at a time
            self._sink = sink
            try:
                if self.lib.espeak_SetVoiceByName(config.voice.encode()) != _EE_OK:
                    raise ProviderError("espeak", f"unknown voice {config.voice!r}", retryable=False)
                self.lib.espeak_SetParameter(_RATE, config.words_per_minute, 0)
                self.lib.espeak_SetParameter(_PITCH, config.pitch, 0)
                self.lib.espeak_SetParameter(_VOLUME, config.volume, 0)
                data = text.encode("utf-8") + b"\0"
                status = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
                # An aborted synthesis is the consumer's doing, not a failure.
                if status != _EE_OK and not sink.cancelled:
                    raise ProviderError("espeak", f"espeak_Synth failed ({status})")
            finally:
                self._sink = None


class EspeakTTS:
    """espeak-ng text to speech; the engine is shared per process and library."""

    name = "espeak"

    def __init__(self, config: EspeakConfig | None = None, *, executor: InferenceExecutor | None = None) -> None:
        self.config = config or EspeakConfig()
        self._executor = executor or shared_executor()
        self._engine: _Engine | None = None
        self.sample_rate = 22050  # espeak-ng's rate; confirmed by load()

    async def load(self, deadlines: Deadlines | None = None) -> None:
        if self._engine is not None:
            return
        def build() -> _Engine:
            return _Engine(*find_espeak(self.config), self.config.chunk_ms)

        def engine() -> _Engine:
            # Off the loop: find_library may run ldconfig.
            found = load_shared("espeak", build)
            if self.config.library and found.library != self.config.library:
                log.warning("espeak-ng %s already loaded in this process; ignoring %s", found.library, self.config.library)
            return found

        wait = (deadlines or Deadlines()).connect
        self._engine = await self._executor.run(engine, admit_timeout=wait)
        self.sample_rate = self._engine.sample_rate

    async def synthesize(self, text: str, deadlines: Deadlines | None = None) -> AsyncGenerator[PCM, None]:
        d = deadlines or Deadlines()
        await self.load(d)
        engine = self._engine
        assert engine is not None
        if not text.strip():
            return
        channel: ThreadChannel[PCM] = ThreadChannel(self.config.queue_chunks)

        def job() -> None:
            try:
                engine.speak(text, self.config, channel)
                channel.close()
            except ChannelClosed:
                pass
            except BaseException as exc:
                channel.close(exc if isinstance(exc, ProviderError) else ProviderError(self.name, repr(exc)))

        done = await self._executor.submit(job, admit_timeout=d.first_result, model=engine.slots)
        try:
            async for chunk in receive(channel, self.name, d):
                yield chunk
        finally:
            channel.cancel()  # the callback sees it and aborts within one chunk
            # Don't await the thread (a GeneratorExit must not wait); it ends
            # within one callback and releases its slots itself.
            done.add_done_callback(_log_failure)


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.warning("espeak job ended with %r", exc)
