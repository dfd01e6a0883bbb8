"""The agent's log lines carry the session id, and the turn id where there is one.

A part logs through ``part_log(module_logger, ctx)`` once its stage is bound: the
records keep the part's own logger name and get the session id of the stage
context's adapter. The pipeline's adapter cannot be used as it is: a plain
``LoggerAdapter`` (Python 3.11) replaces a call's ``extra`` with its own, which
would drop the ``extra={"turn_id": ...}`` given per line; this one merges them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

from voxline.media.stage import StageContext

__all__ = ["SessionLog", "part_log"]


class SessionLog(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter whose context (the session id) and each call's ``extra``
    (the turn id) both reach the record."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra: Mapping[str, object] = kwargs.get("extra") or {}
        kwargs["extra"] = {**(self.extra or {}), **extra}
        return msg, kwargs


def part_log(logger: logging.Logger, ctx: StageContext | None) -> SessionLog:
    """``logger`` with the session id of ``ctx``'s adapter (none before binding)."""
    extra = dict(ctx.log.extra or {}) if ctx is not None else {}
    if ctx is not None:
        extra.setdefault("session_id", ctx.session_id)
    return SessionLog(logger, extra)
