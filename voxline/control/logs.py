"""Logging: JSON lines (production) or plain text, with the call's context on every line.

Context arrives as record attributes: a ``LoggerAdapter`` with
``{"session_id": ...}``, or ``extra={"session_id": ..., "turn_id": ...}`` at the
call site. Every such non-standard attribute is written to the JSON line, so a
log pipeline can select one call's lines by ``session_id``, one turn's by
``turn_id``.

Libraries know nothing of sessions (aiortc, aioice): ``bind_session`` puts the
session id in a context variable when a call is opened, and the tasks those
libraries start for the call inherit it, so their lines carry it too.
"""

from __future__ import annotations

import contextvars
import datetime
import logging
import sys
from typing import IO, Any

import orjson

from voxline.config import ConfigError, ServiceConfig

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "bind_session", "CONTEXT_KEYS"]

CONTEXT_KEYS = ("session_id", "turn_id")  # first after the fixed fields, in this order
# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


_SESSION: contextvars.ContextVar[str | None] = contextvars.ContextVar("voxline_session_id", default=None)


def bind_session(session_id: str) -> None:
    """This task's lines, and those of every task it starts from now on, name ``session_id``."""
    _SESSION.set(session_id)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    out = {k: record.__dict__[k] for k in CONTEXT_KEYS if record.__dict__.get(k) is not None}
    if "session_id" not in out:
        bound = _SESSION.get()
        if bound is not None:
            out = {"session_id": bound, **out}
    for key, value in record.__dict__.items():
        if key not in _STANDARD and key not in out and not key.startswith("_") and value is not None:
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_extras(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: a context value that is not JSON (an enum, a path) still logs.
        return orjson.dumps(line, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [session_id=.. turn_id=..]: message`` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extras = _extras(record)
        # A temporary attribute for the format string, removed so other handlers never see it.
        record.__dict__["context"] = " [" + " ".join(f"{k}={v}" for k, v in extras.items()) + "]" if extras else ""
        try:
            return super().format(record)
        finally:
            del record.__dict__["context"]


def configure_logging(config: ServiceConfig, stream: IO[str] | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one in the configured format and level."""
    level = logging.getLevelName(config.log_level.upper())
    if not isinstance(level, int):
        raise ConfigError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {config.log_level!r}")
    if config.log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
    elif config.log_format == "text":
        formatter = TextFormatter()
    else:
        raise ConfigError(f"log_format must be json or text, got {config.log_format!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's access log repeats what the HTTP metrics count; keep it for debugging.
    logging.getLogger("aiohttp.access").setLevel(max(level, logging.WARNING) if level > logging.DEBUG else level)
    return handler
