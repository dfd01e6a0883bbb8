"""What the conversation has said: a system prompt and a history bounded by tokens.

Tokens are estimated (about four characters each, plus a few per message), which
is close enough for the small local models and for the vendors' limits; the
bound exists so that a long call cannot grow the prompt, and its latency, without
limit. The oldest exchanges go first; the system prompt always stays.

A tool exchange (the assistant's calls and each call's result) is one entry of
the history: it is evicted whole, since a tool result without the call it
answers is refused by the OpenAI API and confuses a chat template.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import orjson

from voxline.providers.base import Message

__all__ = ["Conversation", "estimate_tokens"]

PER_MESSAGE_TOKENS = 4


def estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4 + PER_MESSAGE_TOKENS


def _message_tokens(message: Any) -> int:
    n = estimate_tokens(message.get("content") or "")
    if message.get("tool_calls"):
        n += len(orjson.dumps(message["tool_calls"])) // 4
    return n


class Conversation:
    def __init__(self, system_prompt: str, max_tokens: int = 1024) -> None:
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self._history: deque[tuple[int, list[Any]]] = deque()  # (tokens, the entry's messages)
        self._tokens = 0

    def __len__(self) -> int:
        return sum(len(m) for _, m in self._history)

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.system_prompt) + self._tokens

    def add_user(self, text: str) -> None:
        self._append([{"role": "user", "content": text}])

    def add_assistant(self, text: str) -> None:
        if text.strip():
            self._append([{"role": "assistant", "content": text}])

    def add_exchange(self, messages: Sequence[Any]) -> None:
        """A round's tool calls and their results, kept (and evicted) together."""
        if messages:
            self._append(list(messages))

    def _append(self, messages: list[Any]) -> None:
        tokens = sum(_message_tokens(m) for m in messages)
        self._history.append((tokens, messages))
        self._tokens += tokens
        budget = self.max_tokens - estimate_tokens(self.system_prompt)
        while self._tokens > budget and len(self._history) > 1:
            old, _ = self._history.popleft()
            self._tokens -= old

    def messages(self) -> list[Message]:
        return [{"role": "system", "content": self.system_prompt}, *self.history()]

    def history(self) -> list[Message]:
        return [m for _, entry in self._history for m in entry]
