"""LlamaLLM on real GGUF models (SmolLM2-135M for speed, Qwen2.5-Coder 0.5B marked slow),
and the bounded executor and thread-to-loop plumbing it runs on."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence

import pytest

from voxline.providers.base import Deadlines, LanguageModel, Message, ProviderTimeout
from voxline.providers.executor import (
    AsyncSlots,
    ChannelClosed,
    ExecutorConfig,
    InferenceExecutor,
    ThreadChannel,
)
from voxline.providers.llm.llama import LlamaConfig, LlamaLLM

SMOL = LlamaConfig(model="smollm2-135m", temperature=0.0, max_tokens=48)
STORY: list[Message] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a long story about a cat named Tom."},
]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


async def collect(llm: LlamaLLM, messages: list[Message], deadlines: Deadlines | None = None) -> str:
    stream = llm.stream(messages, deadlines)
    try:
        return "".join([piece async for piece in stream])
    finally:
        await stream.aclose()


def test_satisfies_contract() -> None:
    assert isinstance(LlamaLLM(SMOL), LanguageModel)


async def test_streams_tokens(no_leaked_tasks: None) -> None:
    llm = LlamaLLM(SMOL)
    stream = llm.stream(STORY)
    pieces = [p async for p in stream]
    assert len(pieces) > 10  # token by token, not one block
    text = "".join(pieces)
    assert "Tom" in text
    assert stream.delivered == len(pieces) == stream.generated
    assert len(pieces) <= SMOL.max_tokens


async def test_same_answer_at_temperature_zero_and_while_another_stream_runs() -> None:
    llm = LlamaLLM(SMOL)
    alone = await collect(llm, STORY)
    other: list[Message] = [{"role": "user", "content": "Name three colours."}]
    both = await asyncio.gather(collect(llm, STORY), collect(LlamaLLM(SMOL), other))
    # The model took turns; nothing leaked between the conversations. Not checked
    # character for character: alone the prompt is evaluated cold on two threads,
    # beside the other job from the warm prefix on one, and greedy decoding follows
    # those float paths until a near tie tips one way, which another machine's
    # kernels may place elsewhere. A leak (the other conversation's cache, its
    # tokens in this stream) shows at once: in the opening and in the content.
    story, colours = words(both[0]), words(both[1])
    assert story[:8] == words(alone)[:8], (alone, both[0])
    assert "tom" in story and "tom" not in colours, both
    assert {"red", "blue", "green", "yellow", "orange", "purple", "black", "white"} & set(colours), both[1]
    assert not {"colour", "colours", "color", "colors"} & set(story), both[0]


async def test_aclose_stops_within_one_token() -> None:
    llm = LlamaLLM(LlamaConfig(model="smollm2-135m", temperature=0.0, max_tokens=200))
    stream = llm.stream(STORY)
    for _ in range(5):
        await anext(stream)
    await stream.aclose()
    await stream.wait_done()
    assert stream.evaluated_after_cancel is not None
    assert stream.evaluated_after_cancel <= 1
    assert stream.generated < 200
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_cancelling_the_consumer_stops_the_model() -> None:
    llm = LlamaLLM(LlamaConfig(model="smollm2-135m", temperature=0.0, max_tokens=200))
    stream = llm.stream(STORY)
    got: list[str] = []
    three = asyncio.Event()

    async def consume() -> None:
        async for piece in stream:
            got.append(piece)
            if len(got) == 3:
                three.set()

    task = asyncio.create_task(consume())
    await three.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await stream.wait_done()
    assert stream.evaluated_after_cancel is not None and stream.evaluated_after_cancel <= 1
    # The model is free at once for the next turn.
    assert await collect(llm, [{"role": "user", "content": "Say hello."}])


async def test_token_queue_is_bounded() -> None:
    llm = LlamaLLM(LlamaConfig(model="smollm2-135m", temperature=0.0, max_tokens=100, queue_tokens=2))
    stream = llm.stream(STORY)
    try:
        await anext(stream)
        # A slow consumer: the thread runs at most the queue's size ahead, plus
        # the one token it holds while waiting for room.
        for _ in range(20):
            await asyncio.sleep(0.01)
            assert stream.generated <= stream.delivered + 2 + 1
    finally:
        await stream.aclose()
        await stream.wait_done()


async def test_first_token_deadline() -> None:
    llm = LlamaLLM(SMOL)
    await llm.load()
    with pytest.raises(ProviderTimeout) as info:
        await collect(llm, STORY, Deadlines(first_result=0.0001))
    assert info.value.phase == "first token"
    assert await collect(llm, [{"role": "user", "content": "Say hello."}])  # nothing left stuck


async def test_total_deadline() -> None:
    # The answer must outlast the limit on any machine: 400 tokens are not 0.3 s
    # of work on a fast one. So once it has begun, an urgent job holds the model
    # (it waits up to URGENT_WAIT before each token) and the limit passes.
    executor = InferenceExecutor(ExecutorConfig(threads=2, max_queued=2))
    llm = LlamaLLM(LlamaConfig(model="smollm2-135m", temperature=0.0, max_tokens=400), executor=executor)
    gate = threading.Event()
    urgent = None
    try:
        await llm.load()
        await collect(llm, STORY)  # warm, so the first token comes well inside the limit
        stream = llm.stream(STORY, Deadlines(first_result=5.0, total=0.3))
        got = 0
        with pytest.raises(ProviderTimeout) as info:
            async for _ in stream:
                got += 1
                if urgent is None:
                    urgent = await executor.submit(gate.wait, 5, urgent=True)
        assert info.value.phase == "whole answer"
        assert got < 400
        await stream.aclose()
        await stream.wait_done()
    finally:
        gate.set()
        if urgent is not None:
            await urgent
        executor.shutdown()


async def evaluated_for(llm: LlamaLLM, messages: list[Message]) -> tuple[str, list[int]]:
    """The answer to ``messages`` and the sizes of the batches llama.cpp evaluated for it."""
    assert llm._shared is not None
    llama = llm._shared.llama
    evaluated: list[int] = []
    real_eval = llama.eval

    def counting_eval(tokens: Sequence[int]) -> None:
        evaluated.append(len(tokens))
        real_eval(tokens)

    llama.eval = counting_eval  # type: ignore[method-assign]  # undone below
    try:
        return await collect(llm, messages), evaluated
    finally:
        del llama.eval


def n_tokens(llm: LlamaLLM, text: str) -> int:
    assert llm._shared is not None
    return len(llm._shared.llama.tokenize(text.encode(), add_bos=False))


async def test_warm_system_prompt_is_not_evaluated_again() -> None:
    llm = LlamaLLM(SMOL)
    system = "You are a terse voice assistant on a phone call. " * 8
    await llm.warm(system)
    answer, evaluated = await evaluated_for(llm, [{"role": "system", "content": system}, {"role": "user", "content": "Hi."}])
    assert answer
    assert n_tokens(llm, system) > 60
    assert evaluated[0] < 20  # only the user's turn and the template around it


async def test_prepare_leaves_only_the_callers_new_words_to_evaluate() -> None:
    llm = LlamaLLM(SMOL)
    system = "You are a terse voice assistant on a phone call."
    history: list[Message] = [
        {"role": "system", "content": system},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris, a city on the Seine, famous for art."},
    ]
    await llm.prepare(history)
    question = "And of Italy?"
    answer, evaluated = await evaluated_for(llm, [*history, {"role": "user", "content": question}])
    assert answer
    # The question and the template's closing tokens, not the answer before it
    # nor the opening of the user's turn.
    assert evaluated[0] <= n_tokens(llm, question) + 6, evaluated[0]


async def test_prefilling_the_callers_words_so_far_leaves_only_the_rest() -> None:
    llm = LlamaLLM(SMOL)
    system: Message = {"role": "system", "content": "You are a terse voice assistant on a phone call."}
    so_far = "Could you please tell me what the capital city of"
    await llm.prepare([system, {"role": "user", "content": so_far}], open_turn=False)
    answer, evaluated = await evaluated_for(llm, [system, {"role": "user", "content": so_far + " France is?"}])
    assert answer
    # " France is?" and the template's closing tokens only.
    assert evaluated[0] <= n_tokens(llm, " France is?") + 6, evaluated[0]
    assert n_tokens(llm, so_far) >= 10


@pytest.mark.slow
async def test_qwen_answers_a_simple_question() -> None:
    llm = LlamaLLM(LlamaConfig(temperature=0.0, max_tokens=32))
    messages: list[Message] = [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert "paris" in (await collect(llm, messages)).lower()
    stream = llm.stream(messages)
    pieces = [p async for p in stream]
    assert "paris" in "".join(pieces).lower()
    assert stream.first_token_seconds is not None


# -- the executor and plumbing under the providers


def _threads(llm: LlamaLLM) -> int:
    import llama_cpp

    assert llm._shared is not None
    return int(llama_cpp.llama_n_threads(llm._shared.llama._ctx.ctx))


async def test_burst_threads_only_while_the_model_is_the_executors_only_job() -> None:
    executor = InferenceExecutor(ExecutorConfig(threads=2, max_queued=2))
    config = LlamaConfig(model="smollm2-135m", temperature=0.0, max_tokens=8, n_threads=1, burst_threads=2)
    llm = LlamaLLM(config, executor=executor)
    gate = threading.Event()
    try:
        alone = llm.stream(STORY)
        assert [p async for p in alone]
        # Prompt and every token on 2 threads; the context is left on 1.
        assert alone.burst_steps > alone.generated
        await alone.wait_done()
        assert _threads(llm) == 1

        other = await executor.submit(gate.wait, 5)  # e.g. Piper voicing a sentence
        shared = llm.stream(STORY)
        assert [p async for p in shared]
        await shared.wait_done()
        assert shared.burst_steps == 0 and _threads(llm) == 1
        gate.set()
        await other

        never = LlamaLLM(LlamaConfig(model="smollm2-135m", temperature=0.0, max_tokens=8, burst_threads=None),
                         executor=executor)
        stream = never.stream(STORY)
        assert [p async for p in stream]
        assert stream.burst_steps == 0
    finally:
        gate.set()
        executor.shutdown()


async def test_a_long_job_yields_to_urgent_ones_for_a_bounded_time() -> None:
    executor = InferenceExecutor(ExecutorConfig(threads=2, max_queued=2))
    loop = asyncio.get_running_loop()
    gate, started = threading.Event(), threading.Event()

    def job() -> bool:
        started.set()
        return gate.wait(5)

    try:
        assert executor.yield_to_urgent(1.0) == 0.0  # nothing urgent: no wait
        urgent = await executor.submit(job, urgent=True)
        assert await loop.run_in_executor(None, started.wait, 5)
        waiting = loop.run_in_executor(None, executor.yield_to_urgent, 5.0)
        await asyncio.sleep(0.2)
        assert not waiting.done()
        gate.set()
        # It waited (it was still waiting after 0.2 s) and ended when the urgent job
        # did, not at its 5 s bound. No lower bound in seconds: the pool thread that
        # runs it may start late on a loaded machine.
        assert 0.0 < await waiting < 5.0
        await urgent
        gate.clear()
        started.clear()
        urgent = await executor.submit(job, urgent=True)
        assert await loop.run_in_executor(None, started.wait, 5)
        assert 0.05 <= await loop.run_in_executor(None, executor.yield_to_urgent, 0.05) < 5.0  # bounded
        gate.set()
        await urgent
    finally:
        gate.set()
        executor.shutdown()


async def test_the_model_waits_for_an_urgent_job_before_its_next_token() -> None:
    executor = InferenceExecutor(ExecutorConfig(threads=2, max_queued=2))
    llm = LlamaLLM(LlamaConfig(model="smollm2-135m", temperature=0.0, max_tokens=8), executor=executor)
    await llm.load()
    gate = threading.Event()
    try:
        started = threading.Event()

        def job() -> bool:
            started.set()
            return gate.wait(5)

        urgent = await executor.submit(job, urgent=True)  # e.g. Piper voicing a sentence
        assert await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        stream = llm.stream(STORY)
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.3)  # SmolLM2's first token takes ~0.1 s
        assert not first.done()
        gate.set()
        assert await first
        await urgent
        await stream.aclose()
        await stream.wait_done()
        # It waited for the urgent job (how long depends on how soon the prompt was
        # evaluated on this machine; that the first token came only after the gate
        # opened is what the assertion above shows).
        assert executor.yielded_seconds > 0.0
    finally:
        gate.set()
        executor.shutdown()


async def test_executor_bounds_admitted_jobs() -> None:
    executor = InferenceExecutor(ExecutorConfig(threads=1, max_queued=1))
    gate = threading.Event()
    try:
        running = [await executor.submit(gate.wait, 5) for _ in range(2)]  # one runs, one queued
        assert executor.pending == 2
        with pytest.raises(ProviderTimeout) as info:
            await executor.submit(lambda: None, admit_timeout=0.05)
        assert info.value.phase == "executor slot"
        assert executor.rejected == 1
        gate.set()
        assert await asyncio.gather(*running) == [True, True]
        assert await executor.run(lambda: 42) == 42
    finally:
        gate.set()
        executor.shutdown()


async def test_model_slot_is_waited_for_on_the_loop_not_in_a_thread() -> None:
    executor = InferenceExecutor(ExecutorConfig(threads=2, max_queued=0))
    model = AsyncSlots(1)
    gate = threading.Event()
    try:
        busy = await executor.submit(gate.wait, 5, model=model)
        waiting = asyncio.create_task(executor.run(lambda: "second", model=model))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert executor.pending == 1  # the waiter holds no pool slot
        assert await executor.run(lambda: "other work") == "other work"
        gate.set()
        assert await busy and await waiting == "second"
    finally:
        gate.set()
        executor.shutdown()


async def test_slots_released_from_a_thread_wake_a_waiter_on_another_loop() -> None:
    slots = AsyncSlots(1)
    assert await slots.acquire()
    got: list[bool] = []

    def other_loop() -> None:
        got.append(asyncio.run(slots.acquire(timeout=5)))

    thread = threading.Thread(target=other_loop)
    thread.start()
    while slots.waiting == 0:
        await asyncio.sleep(0.001)
    threading.Thread(target=slots.release).start()
    await asyncio.to_thread(thread.join)
    assert got == [True] and slots.free == 0


async def test_cancelled_waiter_passes_its_slot_on() -> None:
    slots = AsyncSlots(1)
    assert await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    first.cancel()
    slots.release()
    assert await second is True
    assert first.cancelled()
    slots.release()
    assert slots.free == 1
    assert await slots.acquire(timeout=0) is True


async def test_channel_cancel_wakes_a_thread_blocked_on_a_full_channel() -> None:
    channel: ThreadChannel[int] = ThreadChannel(1)
    outcome: list[str] = []

    def produce() -> None:
        try:
            for i in range(10):
                channel.put(i)
            outcome.append("finished")
        except ChannelClosed:
            outcome.append("stopped")

    thread = threading.Thread(target=produce)
    thread.start()
    assert await channel.get() == 0
    channel.cancel()
    await asyncio.to_thread(thread.join, 5)
    assert outcome == ["stopped"]
