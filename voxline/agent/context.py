"""What the conversation has said: a system prompt and a history bounded by tokens.

Tokens are estimated (about four characters each, plus a few per message), which
is close enough for the small local models and for the vendors' limits; the
bound exists so that a long call cannot grow the prompt, and its latency, without
limit. The oldest exchanges go first; the system prompt always stays.
"""

from __future__ import annotations

from collections import deque

from voxline.providers.base import Message

__all__ = ["Conversation", "estimate_tokens"]

PER_MESSAGE_TOKENS = 4


def estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4 + PER_MESSAGE_TOKENS


class Conversation:
    def __init__(self, system_prompt: str, max_tokens: int = 1024) -> None:
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self._history: deque[Message] = deque()
        self._tokens = 0

    def __len__(self) -> int:
        return len(self._history)

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.system_prompt) + self._tokens

    def add_user(self, text: str) -> None:
        self._append({"role": "user", "content": text})

    def add_assistant(self, text: str) -> None:
        if text.strip():
            self._append({"role": "assistant", "content": text})

    def _append(self, message: Message) -> None:
        self._history.append(message)
        self._tokens += estimate_tokens(message["content"])
        budget = self.max_tokens - estimate_tokens(self.system_prompt)
        while self._tokens > budget and len(self._history) > 1:
            old = self._history.popleft()
            self._tokens -= estimate_tokens(old["content"])

    def messages(self) -> list[Message]:
        return [{"role": "system", "content": self.system_prompt}, *self._history]

    def history(self) -> list[Message]:
        return list(self._history)
