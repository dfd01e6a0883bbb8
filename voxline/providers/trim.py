"""Freed heap given back to the system: glibc's ``malloc_trim``, rate-limited.

Inference frees hundreds of MB at a time (a long synthesis, a model's scratch),
and glibc keeps what it freed in its arenas. ``trim_memory()`` returns it, at
most every ``TRIM_INTERVAL`` (a timer catches a request that came too soon);
the executor asks when it falls idle, the service every 30 s.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable

__all__ = ["TRIM_INTERVAL", "Trimmer", "TRIMMER", "trim_memory"]

TRIM_INTERVAL = 0.5  # s: the least time between two malloc_trim calls


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class Trimmer:
    """Gives freed heap back to the system when asked, at most every ``TRIM_INTERVAL``."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._lock = threading.Lock()
        self._last = 0.0
        self._timer: threading.Timer | None = None
        self.trims = 0

    def idle(self) -> None:
        """Trim now, or once ``TRIM_INTERVAL`` since the last trim has passed. Any thread."""
        if self._trim is None:
            return
        with self._lock:
            wait = self._last + TRIM_INTERVAL - time.monotonic()
            if wait > 0:
                if self._timer is None:  # trim once the interval is over
                    self._timer = threading.Timer(wait, self._run)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self._run()

    def _run(self) -> None:
        with self._lock:
            self._timer = None
            self._last = time.monotonic()
        assert self._trim is not None
        self._trim(0)  # releases the GIL (ctypes); a few ms for hundreds of MB
        self.trims += 1



TRIMMER = Trimmer()


def trim_memory() -> None:
    """Give the process's freed heap back to the system (from any thread; not the loop's:
    it takes milliseconds). What the service calls now and then, for memory freed
    outside the executor (a flood of connections, a burst of calls)."""
    TRIMMER.idle()
