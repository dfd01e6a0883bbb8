"""Fresh identifiers: tags, branches, Call-IDs (RFC 3261 §19.3: globally unique, random).

The random source is injectable so tests can pin identifiers.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from .via import MAGIC_COOKIE

__all__ = ["IdSource", "new_branch", "new_call_id", "new_tag"]

IdSource = Callable[[int], str]


def _hex(nbytes: int) -> str:
    return secrets.token_hex(nbytes)


def new_tag(source: IdSource = _hex) -> str:
    return source(6)


def new_branch(source: IdSource = _hex) -> str:
    """A branch with the RFC 3261 magic cookie, so receivers match on it (§8.1.1.7)."""
    return MAGIC_COOKIE + source(8)


def new_call_id(host: str, source: IdSource = _hex) -> str:
    return f"{source(10)}@{host}"
