"""A local LLM on llama.cpp (llama-cpp-python), embedded and offline.

The model (a GGUF file, ``models.resolve``) is loaded once per process and
shared. A llama.cpp context is not thread-safe and holds one conversation's KV
cache, so generations take turns on it (a model slot of 1, waited for on the
event loop); on 2 cores a second context would only halve both.

``stream(messages)`` renders the chat with the template stored in the GGUF and
runs ``create_chat_completion(stream=True)`` in the shared executor. Each token
goes to the event loop through a bounded ``ThreadChannel``; the generating
thread checks the cancel flag after every token, so a cancelled or closed
stream stops the model within one token and frees it for the next turn.

Warm prefix: llama-cpp-python compares a new prompt's tokens with what the
context already holds and evaluates only the part after the common prefix. The
system prompt and the earlier turns of a conversation are at the front of
every prompt, so consecutive turns re-evaluate only the new user message;
``warm()`` evaluates a system prompt ahead of the first turn. Measured, one
thread, a ~60-token system prompt: first token cold ~1.0 s, warm ~0.2 s with
Qwen 0.5B; 0.49 s / 0.08 s with SmolLM2. ``prepare(messages)`` does the same
between turns for the conversation so far. Interleaved conversations on one process still share the system-prompt prefix;
beyond it they evict each other, which costs one prompt evaluation per turn.

Threads: ``n_threads=1`` by default, deliberately. This llama.cpp build
parallelises with OpenMP, whose threads spin while they wait for each other;
with 2 threads on 2 cores, any other busy thread or process (the event loop,
whisper, Piper synthesising the previous sentence) makes them spin against it.
Measured on the 2-core machine (tokens/s; quiet box / with one CPU hog):

    model            2 threads (spin)   2 threads, OMP_WAIT_POLICY=PASSIVE   1 thread
    Qwen 0.5B Q4_K_M   23-25 / 0.5-5         15-16 / 10-13                  13-14 / 10-13
    SmolLM2 135M       92-104 / 17-18        28-29 / -                      51-55 / 31-52

Two spinning threads missed a 30 s answer deadline under one hog; one thread
is 3-4x faster than speech, never collapses, and leaves a core to whisper and
Piper. ``n_threads_batch=2`` halves a cold prompt evaluation on a quiet box
(Qwen: ~0.53 s against ~1.0 s) but it too collapsed under a hog.

Burst threads: yet the first words of an answer are the voice-to-voice path,
and while they are written nothing else of the call runs (whisper has finished,
Piper waits for the first piece). So the thread count is chosen before every
token (``llama_set_n_threads`` is a field write): ``burst_threads`` while the
model is the shared executor's only job, ``n_threads`` as soon as anything else
is admitted (Piper voicing the first piece, another call's whisper). Measured
with Qwen on 2 cores: a ~20-token prompt evaluated in ~0.1 s instead of ~0.25 s
and ~21 tokens/s instead of ~12 until the first piece is voiced. What the
executor cannot see (the event loop of hundreds of calls, another process)
still collapses 2 spinning threads: set ``burst_threads`` to ``None`` there.

One thread of its own: every generation runs on the model's own thread, not
on whichever executor thread is free (it is still admitted and counted by the
shared executor). llama.cpp computes with OpenMP, and an OpenMP team belongs to
the thread that starts it: run from the executor's two threads in turn, the
model kept two teams, and the idle team's spinning thread took the core the
busy one needed (measured in the V2V benchmark: four threads in ggml's code).

Urgent jobs first: before each token the model also waits (up to
``URGENT_WAIT``) while an urgent job runs in the executor (a whisper decode,
Piper voicing a sentence; ``InferenceExecutor.submit(urgent=True)``). Those
are short and the caller is waiting on them; the tokens after the first
piece play a second or more later.

Tools: ``stream(..., tools=[ToolSpec...])`` renders them into the prompt
through the GGUF's own chat template (Qwen2.5's is Hermes style) and takes the
calls the model writes out of its text (``TextToolParser``, see tools.py for
why not llama-cpp's ``chatml-function-calling``); they are yielded as
``ToolCall``s after the text of the round. ``prepare`` takes the same tools, so
the prompt evaluated ahead is the one the turn will use.

Deadlines: ``first_result`` covers waiting for the model and the prompt
evaluation up to the first token, ``idle`` each gap between tokens, ``total``
the whole answer; a miss raises ``ProviderTimeout`` and stops the generation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base import Deadlines, Message, ProviderError, ProviderTimeout
from ..executor import (
    AsyncSlots,
    ChannelClosed,
    InferenceExecutor,
    ThreadChannel,
    load_model,
    shared_executor,
)
from ..models import find_entry, resolve
from .tools import TextToolParser, ToolSpec, openai_tools

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["LlamaConfig", "LlamaLLM", "LlamaStream"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LlamaConfig:
    model: str = "qwen2.5-coder-0.5b-instruct-q4_k_m"  # a known name, a .gguf path, or hf:owner/repo:*.gguf
    n_ctx: int = 2048
    n_threads: int = 1  # see the module docstring: 2 spinning threads collapse under load
    n_threads_batch: int | None = None  # prompt evaluation; None: n_threads
    burst_threads: int | None = 2  # while the model is the executor's only job; None: never
    n_batch: int = 512
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    queue_tokens: int = 64  # tokens generated ahead of the consumer before the thread waits
    allow_download: bool = False
    cache_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class _Shared:
    llama: Llama
    slots: AsyncSlots
    thread: concurrent.futures.ThreadPoolExecutor  # every llama.cpp call, from one thread


class LlamaLLM:
    """Chat completion on a local GGUF model; cheap to construct, the model is shared per process."""

    name = "llama"

    def __init__(self, config: LlamaConfig | None = None, *, executor: InferenceExecutor | None = None) -> None:
        self.config = config or LlamaConfig()
        self._executor = executor or shared_executor()
        self._shared: _Shared | None = None

    async def load(self, deadlines: Deadlines | None = None) -> None:
        if self._shared is not None:
            return
        c = self.config
        key = ("llama", c.model, c.cache_dir, c.n_ctx, c.n_threads, c.n_threads_batch, c.n_batch, c.seed)
        self._shared = await load_model(self._executor, self.name, key, self._load, deadlines)

    def _load(self) -> _Shared:
        from llama_cpp import Llama

        c = self.config
        gguf = find_entry(resolve(c.model, cache_dir=c.cache_dir, allow_download=c.allow_download), ".gguf")
        started = time.perf_counter()
        llama = Llama(
            model_path=str(gguf),
            n_ctx=c.n_ctx,
            n_threads=c.n_threads,
            n_threads_batch=c.n_threads_batch or c.n_threads,
            n_batch=c.n_batch,
            seed=c.seed,
            verbose=False,
        )
        log.info("llama %s loaded in %.2fs", gguf.name, time.perf_counter() - started)
        return _Shared(llama, AsyncSlots(1), concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="voxline-llama"))

    supports_tools = True

    def stream(self, messages: Sequence[Message], deadlines: Deadlines | None = None, *,
               tools: Sequence[ToolSpec] | None = None) -> LlamaStream:
        return LlamaStream(self, list(messages), deadlines or Deadlines(), tools=tools)

    async def warm(self, system_prompt: str, deadlines: Deadlines | None = None, *,
                   tools: Sequence[ToolSpec] | None = None) -> None:
        """Evaluate ``system_prompt`` now, so the first turn that starts with it is warm."""
        await self.prepare([{"role": "system", "content": system_prompt}], deadlines, tools=tools)

    async def prepare(
        self, messages: Sequence[Message], deadlines: Deadlines | None = None, *, open_turn: bool = True,
        tools: Sequence[ToolSpec] | None = None,
    ) -> None:
        """Evaluate ``messages`` now, so the next prompt that starts with them
        evaluates only what follows.

        ``open_turn`` (between turns, while the caller thinks): also the opening
        of the next user turn, so the next prompt evaluates only the caller's
        new words; the previous answer as the context keeps it (cut at a
        barge-in) and the template's turn tokens are done ahead. Without it
        (while the caller speaks): ``messages`` end with the caller's words so
        far, and the final prompt shares them up to the first word that differs.
        """
        tail: list[Message] = [{"role": "user", "content": ""}] if open_turn else []
        # While the caller speaks, whisper decodes their words every few hundred
        # ms: evaluate on one thread and leave it the other core.
        stream = LlamaStream(self, [*messages, *tail],
                             deadlines or Deadlines(first_result=30.0), max_tokens=1, burst=open_turn,
                             tools=tools)  # fmt: skip
        try:
            async for _ in stream:
                pass
        finally:
            await stream.aclose()


class LlamaStream:
    """The tokens of one answer (an async iterator of text pieces).

    ``generated`` counts pieces the model produced, ``delivered`` those handed
    to the consumer. ``evaluated_after_cancel`` is how many tokens the model
    evaluated between the cancel request and the end of the generating thread
    (read from the context's token count; ``None`` if never cancelled while
    running). ``wait_done()`` waits for that thread to end.
    """

    def __init__(
        self, llm: LlamaLLM, messages: list[Message], deadlines: Deadlines, max_tokens: int | None = None,
        burst: bool = True, tools: Sequence[ToolSpec] | None = None,
    ) -> None:
        self._llm = llm
        self._burst = burst
        self._messages: list[Any] = [_for_template(m) for m in messages]
        self._tools = openai_tools(tools) if tools else None
        # After tool calls the model may write another as text even when offered none: never speak it.
        self._parse = bool(tools) or any(m.get("role") == "tool" for m in self._messages)
        self._deadlines = deadlines
        self._max_tokens = llm.config.max_tokens if max_tokens is None else max_tokens
        self._channel: ThreadChannel[Any] | None = None
        self._job: asyncio.Future[None] | None = None
        self._finished = False
        self._started_at = 0.0
        self._last_at = 0.0
        self._llama: Llama | None = None
        self._n_at_cancel: int | None = None
        self.generated = 0
        self.delivered = 0
        self.evaluated_after_cancel: int | None = None
        self.first_token_seconds: float | None = None
        self.burst_steps = 0  # decode steps (the prompt, then one per chunk) set to burst threads

    def __aiter__(self) -> LlamaStream:
        return self

    async def __anext__(self) -> Any:  # str; or, with tools, a ToolCall (tools.py)
        if self._finished:
            raise StopAsyncIteration
        try:
            if self._channel is None:
                await self._start()
            return await self._next()
        except StopAsyncIteration:
            self._finished = True
            raise
        except BaseException:  # a deadline, an error, or the consumer's cancellation
            self._cancel()
            raise

    async def _start(self) -> None:
        d = self._deadlines
        loop = asyncio.get_running_loop()
        self._started_at = self._last_at = loop.time()
        try:
            async with asyncio.timeout(d.first_result):
                await self._llm.load(d)
        except TimeoutError:
            raise ProviderTimeout(self._llm.name, "first token", d.first_result) from None
        shared = self._llm._shared
        assert shared is not None
        self._llama = shared.llama
        self._channel = ThreadChannel(self._llm.config.queue_tokens)
        remaining = max(0.0, d.first_result - (loop.time() - self._started_at))
        try:
            self._job = await self._llm._executor.submit(
                self._generate, shared.llama, self._channel, admit_timeout=remaining, model=shared.slots,
                thread=shared.thread,
            )
        except ProviderTimeout:
            raise ProviderTimeout(self._llm.name, "first token", d.first_result) from None
        self._job.add_done_callback(_log_failure)

    async def _next(self) -> Any:
        assert self._channel is not None
        d = self._deadlines
        loop = asyncio.get_running_loop()
        while True:
            first = self.first_token_seconds is None
            phase, limit = ("first token", d.first_result) if first else ("next token", d.idle)
            budget = limit - (loop.time() - (self._started_at if first else self._last_at))
            total_left = d.total - (loop.time() - self._started_at)
            if total_left < budget:
                phase, limit, budget = "whole answer", d.total, total_left
            try:
                async with asyncio.timeout(max(0.0, budget)):
                    piece = await self._channel.get()
            except TimeoutError:
                raise ProviderTimeout(self._llm.name, phase, limit) from None
            self._last_at = loop.time()
            if first:
                self.first_token_seconds = self._last_at - self._started_at
            if piece is not _HELD:  # a token of a tool call being written: progress, not text
                self.delivered += 1
                return piece

    # -- runs in a pool thread, holding the model's only slot
    def _generate(self, llama: Llama, channel: ThreadChannel[Any]) -> None:
        c = self._llm.config
        if channel.cancelled:  # given up while waiting for the model
            channel.close()
            return
        threads = _Threads(llama, c, self._llm._executor, self._burst)
        if threads.pick():  # the prompt is evaluated at the first chunk
            self.burst_steps += 1
        parser = TextToolParser() if self._parse else None
        chunks: Any = llama.create_chat_completion(
            messages=self._messages,
            stream=True,
            max_tokens=self._max_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            tools=self._tools,  # type: ignore[arg-type]
        )
        try:
            # The generator evaluates the next token only when asked for the
            # next chunk, so checking the flag between chunks stops the model
            # within one token (llama-cpp-python holds back the text of a
            # token that may start a stop string or splits a UTF-8 character,
            # which can add a token in rare cases).
            for chunk in chunks:
                if channel.cancelled:
                    break
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    self.generated += 1
                    spoken = False
                    for text in parser.feed(piece) if parser is not None else (piece,):
                        channel.put(text)
                        spoken = True
                    if not spoken:
                        channel.put(_HELD)
                if threads.pick():  # for the next token
                    self.burst_steps += 1
            if parser is not None and not channel.cancelled:
                rest, calls = parser.close()
                if rest:
                    channel.put(rest)
                for call in calls:
                    channel.put(call)
            channel.close()
        except ChannelClosed:
            pass
        except Exception as exc:
            log.exception("llama generation failed")
            channel.close(ProviderError(self._llm.name, f"generation failed: {exc!r}"))
        finally:
            chunks.close()  # ends llama-cpp's generator now, not at garbage collection
            threads.restore()
            if self._n_at_cancel is not None:  # still holding the model: nobody else moved n_tokens
                self.evaluated_after_cancel = llama.n_tokens - self._n_at_cancel

    def _cancel(self) -> None:
        self._finished = True
        if self._channel is not None and not self._channel.cancelled:
            if self._llama is not None and self._job is not None and not self._job.done():
                self._n_at_cancel = self._llama.n_tokens
            self._channel.cancel()

    async def aclose(self) -> None:
        self._cancel()

    async def wait_done(self) -> None:
        """Wait for the generating thread to end (after cancel it takes at most one token)."""
        if self._job is not None:
            await asyncio.gather(self._job, return_exceptions=True)

    def __del__(self) -> None:
        # A stream dropped without aclose() must not keep the model generating.
        if self._channel is not None:
            self._channel.cancel()


_HELD = object()  # in the channel: a token held back (a tool call being written)

URGENT_WAIT = 0.5  # seconds the model waits, per token, for urgent jobs (whisper, Piper)


class _Threads:
    """Chooses llama.cpp's thread count before each decode (see the module docstring)."""

    __slots__ = ("_ctx", "_floor", "_burst", "_executor", "current")

    def __init__(self, llama: Llama, config: LlamaConfig, executor: InferenceExecutor, allowed: bool = True) -> None:
        self._ctx = llama._ctx.ctx  # llama-cpp-python's context pointer
        self._floor = (config.n_threads, config.n_threads_batch or config.n_threads)
        burst = config.burst_threads if allowed else None
        self._burst = (burst, max(burst, self._floor[1])) if burst and burst > config.n_threads else None
        self._executor = executor
        self.current = self._floor

    def pick(self) -> bool:
        """Before the next decode: let urgent jobs (whisper, Piper) finish first,
        then set the thread counts; True if they are the burst counts."""
        self._executor.yield_to_urgent(URGENT_WAIT)
        if self._burst is None:
            return False
        burst = self._executor.pending <= 1  # this job is the executor's only one
        n = self._burst if burst else self._floor
        if n != self.current:
            import llama_cpp

            llama_cpp.llama_set_n_threads(self._ctx, *n)
            self.current = n
        return burst

    def restore(self) -> None:
        if self.current != self._floor:
            import llama_cpp

            llama_cpp.llama_set_n_threads(self._ctx, *self._floor)
            self.current = self._floor


# Appended to a tool's result: without it Qwen2.5 0.5B asks for the same call
# again (measured: it did so with and without tools offered; with this line it
# answered from the result).
TOOL_RESULT_HINT = "\nNow answer the caller in words, using this result."


def _for_template(message: Any) -> Any:
    """A message as the GGUF's chat template expects it: a tool call's arguments
    as an object (the OpenAI format carries them as a JSON string), a tool's
    result with the hint above."""
    if message.get("role") == "tool":
        return {**message, "content": str(message.get("content", "")) + TOOL_RESULT_HINT}
    calls = message.get("tool_calls")
    if not calls:
        return message
    import orjson

    out = []
    for call in calls:
        fn = dict(call.get("function") or {})
        if isinstance(fn.get("arguments"), str):
            try:
                fn["arguments"] = orjson.loads(fn["arguments"])
            except orjson.JSONDecodeError:
                fn["arguments"] = {}
        out.append({**call, "function": fn})
    return {**message, "tool_calls": out}


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.warning("llama job ended with %r", exc)
