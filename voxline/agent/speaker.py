"""The bot's side of the conversation: every reply's life, from start to heard.

The ``Speaker`` is the part of the ``Assistant`` that talks. It owns what the
conversation has said (``Conversation``), the reply in flight and the draft, and
the whole lifecycle of a reply:

- **start**: a reply answers the caller's words (``answer``) or speaks a text
  (``say``: a greeting, an apology, the control API);
- **voice**: the LLM streams into the sentence splitter, pieces go through a
  bounded queue to TTS while the rest is written, and TTS audio goes out (the
  first piece may be hurried, see sentences.py; the voice's leading silence is
  trimmed);
- **draft**: a reply to a speculative transcript (the caller paused, the turn has
  not ended) is written and voiced at once but held; adopted when the turn ends
  as it assumed, its held audio plays at once; discarded unheard otherwise;
- **pause, resume**: caller speech over the reply stops playout (the pipeline's
  interrupt) and holds new audio; a resume replays from the playout position;
- **repair**: an answer the LLM breaks off mid-stream (``StreamInterrupted``) is
  owned up to ("Sorry, I lost my words there...") and given again in full by
  whichever model the fallback chain now prefers; an apology if that fails too;
- **cancel**: the LLM and TTS stop, and the context keeps only what the caller
  heard (``ctx.feedback.heard``: the egress's playout position);
- **played**: the reply's end mark reached the caller: the context keeps it all.

Tools (toolbox.py): where the call has a ``Toolbox``, the LLM is offered its
tools; a round that asks for some has them run (each within its deadline; a
draft's wait until it is adopted, so a discarded draft acted on nothing), their
results go back to the LLM for the next round, at most ``max_tool_rounds``
rounds that call tools (then one round without tools, so the turn is answered
in words). ``end_call`` and ``transfer`` act on the line once the reply that
announces them has been played (or, should playout never say so, its length
and a grace later); a goodbye is said if the model wrote none; a reply cut by
the caller's barge-in drops its pending action (the caller has more to say).

Between turns it lets the LLM warm its prompt cache (``prepare``): the
conversation so far after each reply, the caller's words so far while they
speak. What the turn-taking must know (audio is out, a provider failed) and what
is reported goes to the Assistant as actions (actions.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from typing import Any, cast

import numpy as np
import orjson

from voxline.media.frames import Audio, Frame, Mark
from voxline.media.stage import Emit, StageContext
from voxline.providers.base import PCM, LanguageModel, Message, ProviderError, TextToSpeech
from voxline.providers.llm.tools import ToolCall, assistant_calls, tool_result
from voxline.providers.resilience import StreamInterrupted

from .actions import Audible, Failed, Perform
from .config import AssistantConfig
from .context import Conversation
from .events import AgentEvent
from .logs import SessionLog, part_log
from .reply import Reply
from .sentences import SentenceSplitter
from .tasks import TaskSet
from .toolbox import END_CALL, TRANSFER, Outcome, Toolbox

__all__ = ["REPLY_END", "Speaker", "trim_leading_silence"]

log = logging.getLogger(__name__)

SENTENCE_QUEUE = 8  # sentences between the LLM and TTS: backpressure on the LLM
PREPARE_TIMEOUT = 10.0  # seconds for the LLM to evaluate the conversation between turns
# At most one prefill of the caller's words per this many seconds: each is ~0.1-0.2 s
# of the LLM, and one still running when the caller pauses slows the decode of
# their last words on 2 cores.
PREFILL_INTERVAL = 0.6
AFTER_GRACE = 3.0  # s past a reply's length before its end_call/transfer acts without playout's word

REPLY_END = "reply-end"
LEAD_LEVEL = 32  # int16 peak below which a reply's leading audio is silence (-60 dBFS)
LEAD_KEEP = 0.002  # seconds kept before the first sound


def trim_leading_silence(pcm: PCM, rate: int) -> PCM:
    """Drop the silence a voice puts before a reply's first sound (Piper: ~40 ms):
    it would only add to the caller's wait. Empty if ``pcm`` is all silence."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > LEAD_LEVEL)
    if not len(loud):
        return pcm[:0]
    return pcm[max(0, int(loud[0]) - int(LEAD_KEEP * rate)) :]


class Speaker:
    """Drafts and replies of one agent stage; see the module docstring."""

    def __init__(
        self,
        llm: LanguageModel,
        tts: TextToSpeech,
        fallback_tts: TextToSpeech,
        config: AssistantConfig,
        *,
        tasks: TaskSet,
        perform: Perform,
        stage: str = "agent",
        toolbox: Toolbox | None = None,
    ) -> None:
        self.llm = llm
        self.tts = tts
        self.fallback_tts = fallback_tts
        self.config = config
        self.rate = tts.sample_rate
        self.conversation = Conversation(config.system_prompt, config.max_context_tokens)
        self._tasks = tasks
        self._perform = perform
        self._stage = stage  # the pipeline's interrupt flushes what follows this stage
        self.toolbox = toolbox if toolbox else None
        self._tools = self.toolbox.specs if self.toolbox is not None else None
        self._ctx: StageContext | None = None
        self._log: SessionLog = part_log(log, None)
        self._emit: Emit | None = None
        self._reply: Reply | None = None
        self._draft: Reply | None = None  # a reply to a speculative transcript, held
        self._prefill: asyncio.Task[None] | None = None  # the LLM evaluating interim words
        self._prefill_at = float("-inf")
        self.prefills = 0
        self.drafts = {"started": 0, "adopted": 0, "discarded": 0}

    def bind(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._log = part_log(log, ctx)

    def attach_emit(self, emit: Emit) -> None:
        self._emit = emit

    @property
    def replying(self) -> bool:
        """A reply is under way, paused or playing (a draft is not, until adopted)."""
        return self._reply is not None

    @property
    def drafting(self) -> bool:
        return self._draft is not None

    # -- start ---------------------------------------------------------------

    def answer(self, turn: int, text: str) -> None:
        """Answer the caller's ``text``: the draft, if it answered exactly that."""
        draft = self._draft
        if draft is not None and draft.turn == turn and draft.draft == text:
            self._adopt(draft)
        else:
            self._start(turn, text)

    def say(self, turn: int, text: str, *, offline: bool = False) -> None:
        """Speak ``text`` (in the offline voice if ``offline``)."""
        self._start(turn, text, say=True, offline=offline)

    def _start(self, turn: int, text: str, *, say: bool = False, offline: bool = False) -> None:
        self.discard_draft()
        if self._reply is not None:
            self.cancel()
        reply = Reply(turn, int(self.config.max_held_audio * self.rate))
        self._reply = reply
        if say:
            coro = self._speak_text(reply, text, offline)
        else:
            self.conversation.add_user(text)
            coro = self._answer(reply, self.conversation.messages())
        reply.task = self._tasks.spawn(coro, f"reply-{turn}")

    # -- drafts --------------------------------------------------------------

    def draft(self, turn: int, text: str) -> None:
        """Answer ``text`` ahead, held, before the caller's turn has ended."""
        self.discard_draft()
        if self._prefill is not None:
            self._prefill.cancel()  # its prompt is evaluated already; not its one token
        draft = Reply(turn, int(self.config.max_held_audio * self.rate), draft=text)
        messages: list[Message] = [*self.conversation.messages(), {"role": "user", "content": text}]
        draft.task = self._tasks.spawn(self._answer(draft, messages), f"draft-{turn}")
        self._draft = draft
        self.drafts["started"] += 1
        self._perform(AgentEvent("reply", turn, {"draft": True, "text": text}))

    def discard_draft(self) -> None:
        draft, self._draft = self._draft, None
        if draft is None:
            return
        if draft.task is not None and not draft.task.done():
            draft.task.cancel()
        self.drafts["discarded"] += 1

    def _adopt(self, draft: Reply) -> None:
        """The turn ended as the draft assumed: it becomes the reply, and what it
        has produced so far plays now."""
        self._draft = None
        if self._reply is not None:
            self.cancel()
        text, draft.draft = draft.draft or "", None
        draft.adopted.set()  # tools it asked for may run now
        self.conversation.add_user(text)
        self._reply = draft
        self.drafts["adopted"] += 1
        if self._ctx is not None:
            now = self._now()
            for name, at in draft.marks.items():  # work done ahead counts from now
                self._ctx.mark(draft.turn, name, max(at, now))
        if draft.done:
            self._perform(AgentEvent("transcript", draft.turn, {"text": draft.full, "final": True, "who": "agent"}))
        self._tasks.spawn(self._release(draft, 0), "adopt")

    # -- pause, resume, cancel, played ---------------------------------------

    def pause(self) -> None:
        """Caller speech over the reply: playout stops within a frame, new audio is held."""
        self._interrupt_downstream("barge-in")
        reply = self._reply
        if reply is not None:
            reply.hold = True
            self._perform(AgentEvent("reply", reply.turn, {"paused": True, "heard_s": self._heard_s(reply)}))

    def resume(self) -> None:
        """Replay from the playout position: what was sent but not heard, and what
        was produced while paused. New audio stays held until this has caught up,
        so nothing is played out of order."""
        self._tasks.spawn(self._resume(), "resume")

    async def _resume(self) -> None:
        reply = self._reply
        if reply is not None:
            await self._release(reply, int(self._heard_s(reply) * self.rate))

    def cancel(self) -> None:
        """Stop the reply; the context keeps what the caller heard of it."""
        reply = self._reply
        if reply is None:
            return
        self._reply = None
        if reply.task is not None and not reply.task.done():
            reply.task.cancel()
        self._interrupt_downstream("cancel")
        if reply.after is not None:
            self._perform(AgentEvent("action", reply.turn, {"name": reply.after[0], "state": "dropped",
                                                            "reason": "the caller spoke over the reply"}))
            reply.after = None
        heard = reply.heard_text(int(self._heard_s(reply) * self.rate))
        # The context keeps what the caller heard, not what the model wrote.
        self.conversation.add_assistant(heard)
        self._perform(AgentEvent("heard", reply.turn, {"text": heard, "complete": False}))
        self._close_turn(reply.turn)

    def played(self, mark: Mark) -> bool:
        """Playout reached ``mark``; True if it ended the reply (played in full)."""
        reply = self._reply
        if mark.name != REPLY_END or reply is None or mark.turn != reply.turn:
            return False
        self._reply = None  # played in full: nothing left to pause, resume or cancel
        self.conversation.add_assistant(reply.full)
        self._perform(AgentEvent("heard", reply.turn, {"text": reply.heard_text(None), "complete": True}))
        self._close_turn(reply.turn)
        self._act(reply)
        return True

    async def _release(self, reply: Reply, position: int) -> None:
        """Emit the held audio from ``position`` on, then let new audio through."""
        while (pcm := reply.unheard(position)) is not None and self._reply is reply:
            position = reply.samples
            self._perform(Audible(reply.turn))
            await self._emit_frame(Audio(pcm, self.rate, 0, self._now(), reply.turn))
        if self._reply is not reply:
            return
        reply.hold = False
        if reply.done:
            await self._emit_frame(Mark(REPLY_END, self._now(), reply.turn))

    # -- voice ---------------------------------------------------------------

    async def _answer(self, reply: Reply, messages: list[Message]) -> None:
        produced: list[str] = []
        try:
            await self._write_and_voice(reply, messages, produced)
        except* (ProviderError, TimeoutError, OSError) as group:
            exc = group.exceptions[0]
            self._perform(Failed("llm" if "llm" in str(exc).lower() else "reply", "reply", reply.turn, exc))
            if not (isinstance(exc, StreamInterrupted) and await self._repair(reply, messages, produced)):
                await self._apologise(reply)
        reply.full = "".join(produced).strip()
        reply.done = True
        if self._reply is reply:
            self._perform(AgentEvent("transcript", reply.turn, {"text": reply.full, "final": True, "who": "agent"}))
        if reply.after is not None:
            self._tasks.spawn(self._act_late(reply), "act-late")
        if not reply.hold:
            await self._emit_frame(Mark(REPLY_END, self._now(), reply.turn))

    async def _write_and_voice(self, reply: Reply, messages: list[Message], produced: list[str]) -> None:
        queue: asyncio.Queue[str | None] = asyncio.Queue(SENTENCE_QUEUE)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._rounds(reply, list(messages), queue, produced))
            tg.create_task(self._voice(reply, queue, self.tts))

    async def _rounds(self, reply: Reply, messages: list[Any], queue: asyncio.Queue[str | None],
                      produced: list[str]) -> None:
        """The LLM's rounds of one reply: text, and tools run between rounds."""
        try:
            rounds = 0
            tools = self._tools
            done: dict[str, Outcome] = {}  # the calls of this reply so far, by what they asked
            while True:
                before = len(produced)
                calls = await self._generate(reply, messages, queue, produced, tools)
                if not calls:
                    return
                if tools is None:  # a model that asks for tools it was not offered: not run
                    return
                said = "".join(produced[before:]).strip()
                outcomes = await self._run_tools(reply, calls, done)
                if all(o.repeated for o in outcomes):
                    # It asks again for what it has (small models do): words only from here.
                    self._perform(AgentEvent("action", reply.turn, {
                        "state": "repeated", "reason": "the same call again; answering without tools"}))
                    tools = None
                ran = [o.call for o in outcomes]  # each call in the history has its result (OpenAI requires it)
                exchange = [assistant_calls(ran), *(tool_result(o.call, o.result) for o in outcomes)]
                messages += [assistant_calls(ran, said), *exchange[1:]]
                self.conversation.add_exchange(exchange)
                final = next((o for o in outcomes if o.after is not None and o.ok), None)
                if final is not None:
                    await self._announce(reply, final, queue, produced)
                    return
                rounds += 1
                if tools is not None and rounds >= self.config.max_tool_rounds:
                    self._perform(AgentEvent("action", reply.turn, {
                        "state": "capped", "reason": f"{rounds} rounds of tool calls; answering without tools"}))
                    tools = None
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    async def _run_tools(self, reply: Reply, calls: list[ToolCall], done: dict[str, Outcome]) -> list[Outcome]:
        toolbox = self.toolbox
        assert toolbox is not None
        if reply.draft is not None:  # a draft acts only once adopted (discarded: cancelled here)
            async with asyncio.timeout(self.config.deadlines.total):
                await reply.adopted.wait()
        outcomes: list[Outcome] = []
        for call in calls:  # in the order asked: a later call may depend on an earlier one
            key = call.name + ":" + orjson.dumps(call.arguments, option=orjson.OPT_SORT_KEYS).decode()
            earlier = done.get(key)
            if earlier is not None and earlier.after is None:  # asked again: its result again, not run again
                outcomes.append(dataclasses.replace(earlier, call=call, repeated=True))
                continue
            self._perform(AgentEvent("action", reply.turn, {"name": call.name, "state": "started",
                                                            "arguments": call.arguments}))
            outcome = await toolbox.run(call)
            done[key] = outcome
            outcomes.append(outcome)
            data: dict[str, object] = {"name": call.name, "state": "done" if outcome.ok else "failed",
                                       "arguments": call.arguments, "seconds": round(outcome.seconds, 3)}
            data["result" if outcome.ok else "error"] = outcome.result if outcome.ok else outcome.result["error"]
            self._perform(AgentEvent("action", reply.turn, data))
            if outcome.after is not None and outcome.ok:
                break  # the call ends or leaves: nothing after it is run
        return outcomes

    async def _announce(self, reply: Reply, outcome: Outcome, queue: asyncio.Queue[str | None],
                        produced: list[str]) -> None:
        """``end_call`` or ``transfer`` accepted: act once the reply is played; say
        a goodbye (or that the transfer begins) if nothing was said yet."""
        call = outcome.call
        reply.after = (outcome.after or "", {**call.arguments, "target": outcome.target})
        if "".join(produced).strip():
            return
        if outcome.after == END_CALL:
            words = call.arguments.get("goodbye")
            text = words.strip()[:300] if isinstance(words, str) and words.strip() else self.config.goodbye
        else:
            text = self.config.transfer_notice
        produced.append(text)
        await self._queue_sentence(reply, queue, text)

    def _act(self, reply: Reply) -> None:
        """Do the reply's pending ``end_call`` or ``transfer`` (once)."""
        after, reply.after = reply.after, None
        if after is None or self.toolbox is None or self.toolbox.line is None:
            return
        name, args = after
        line = self.toolbox.line
        try:
            if name == END_CALL:
                self._perform(AgentEvent("action", reply.turn, {"name": name, "state": "hanging_up"}))
                line.hang_up("agent: end_call")
            elif name == TRANSFER:
                target = str(args.get("target", "")).strip()
                self._perform(AgentEvent("action", reply.turn, {"name": name, "state": "transferring",
                                                                "target": target}))
                line.transfer(target)
        except Exception as exc:  # the call goes on, and the model hears of it next turn
            self._log.warning("%s failed: %s", name, exc, extra={"turn_id": reply.turn})
            self._perform(AgentEvent("action", reply.turn, {"name": name, "state": "failed", "error": str(exc)}))

    async def _act_late(self, reply: Reply) -> None:
        """Playout never said the reply was played: act once it surely has been."""
        clock = self._ctx.clock if self._ctx is not None else None
        wait = reply.samples / self.rate + AFTER_GRACE
        if clock is not None:
            await clock.sleep_until(clock.now() + wait)
        else:
            await asyncio.sleep(wait)
        self._act(reply)  # a no-op if played (done), cut or replaced (dropped) meanwhile

    async def _repair(self, reply: Reply, messages: list[Message], produced: list[str]) -> bool:
        """The answer broke off after the caller heard its start: say so, and give
        the whole answer again (the chain now prefers a healthy model; answers of
        two models are never spliced). True if the turn was answered."""
        repair = self.config.repair
        if repair is None:
            return False
        voiced = reply.samples > 0  # nothing voiced yet: nothing to own up to, only answer
        if voiced:
            produced.append(" … " + repair + " ")
        else:
            produced.clear()
        again: list[str] = []
        failed = False
        try:
            if voiced:
                await self._speak(reply, repair, self.tts)
            await self._write_and_voice(reply, messages, again)
        except* (ProviderError, TimeoutError, OSError) as group:
            self._perform(Failed("llm", "reply", reply.turn, group.exceptions[0]))
            failed = True
        produced.extend(again)
        return not failed and bool("".join(again).strip())

    async def _apologise(self, reply: Reply) -> None:
        try:
            await self._speak(reply, self.config.apology, self.fallback_tts)
        except (ProviderError, TimeoutError, OSError) as exc:
            # Even the offline voice failed: nothing more to say this turn.
            self._log.error("offline voice failed: %s", exc, extra={"turn_id": reply.turn})

    async def _generate(
        self,
        reply: Reply,
        messages: list[Any],
        queue: asyncio.Queue[str | None],
        produced: list[str],
        tools: list[Any] | None = None,
    ) -> list[ToolCall]:
        """One round of the LLM: its text goes to TTS; the tools it asks for are returned."""
        splitter = SentenceSplitter()
        wait = self.config.first_piece_wait
        first_at: float | None = None
        calls: list[ToolCall] = []
        # An engine with tools takes tools= (providers/llm/tools.py); the base contract has none.
        stream = cast(Any, self.llm).stream(messages, self.config.deadlines, tools=tools) if tools \
            else self.llm.stream(messages, self.config.deadlines)
        async for piece in stream:
            now = self._now()
            if first_at is None:
                self._mark(reply, "first_token")
                first_at = now
            if not isinstance(piece, str):
                calls.append(piece)  # a ToolCall
                continue
            produced.append(piece)
            hurry = wait is not None and reply.pieces == 0 and now - first_at >= wait
            for sentence in splitter.feed(piece, hurry):
                await self._queue_sentence(reply, queue, sentence)
        for sentence in splitter.flush():
            await self._queue_sentence(reply, queue, sentence)
        return calls

    async def _queue_sentence(self, reply: Reply, queue: asyncio.Queue[str | None], sentence: str) -> None:
        if reply.pieces == 0:
            self._mark(reply, "first_sentence")
        reply.pieces += 1
        async with asyncio.timeout(self.config.deadlines.total):
            await queue.put(sentence)

    async def _voice(self, reply: Reply, queue: asyncio.Queue[str | None], tts: TextToSpeech) -> None:
        while True:
            async with asyncio.timeout(self.config.deadlines.total):
                sentence = await queue.get()
            if sentence is None:
                return
            await self._speak(reply, sentence, tts)

    async def _speak_text(self, reply: Reply, text: str, offline: bool) -> None:
        tts = self.fallback_tts if offline else self.tts
        self._mark(reply, "first_sentence")
        try:
            await self._speak(reply, text, tts)
        except (ProviderError, TimeoutError, OSError) as exc:
            self._perform(Failed("tts", "tts", reply.turn, exc))
            if tts is not self.fallback_tts:
                await self._apologise(reply)
        reply.full = text
        reply.done = True
        self._perform(AgentEvent("transcript", reply.turn, {"text": text, "final": True, "who": "agent"}))
        if not reply.hold:
            await self._emit_frame(Mark(REPLY_END, self._now(), reply.turn))

    async def _speak(self, reply: Reply, text: str, tts: TextToSpeech) -> None:
        reply.start_piece(text)
        async for pcm in tts.synthesize(text, self.config.deadlines):
            if tts.sample_rate != self.rate:
                from voxline.media.resample import resample_chunk

                pcm = resample_chunk(pcm, tts.sample_rate, self.rate)
            await self._out(reply, pcm)

    async def _out(self, reply: Reply, pcm: PCM) -> None:
        if reply.samples == 0:
            pcm = trim_leading_silence(pcm, self.rate)
        if not len(pcm):
            return
        if reply.samples == 0:
            self._mark(reply, "first_tts_audio")
        reply.add(pcm)
        if reply.hold:
            return
        self._perform(Audible(reply.turn))
        await self._emit_frame(Audio(pcm, self.rate, 0, self._now(), reply.turn))

    async def _emit_frame(self, frame: Frame) -> None:
        if self._emit is not None:
            await self._emit(frame)

    # -- the LLM between turns -----------------------------------------------

    def prefill(self, said: str) -> None:
        """The caller's words so far: the LLM may evaluate them while they speak,
        if it is free (never delaying a reply, a draft or a prefill in flight)."""
        prepare = getattr(self.llm, "prepare", None)
        if (
            prepare is None
            or not self.config.prefill_interims
            or self._draft is not None
            or (self._prefill is not None and not self._prefill.done())
            or self._now() - self._prefill_at < PREFILL_INTERVAL
        ):
            return
        self._prefill_at = self._now()
        messages: list[Message] = [*self.conversation.messages(), {"role": "user", "content": said}]
        self._prefill = self._tasks.spawn(self._prepare(prepare, messages, open_turn=False), "llm-prefill")
        self.prefills += 1

    def prepare_next(self) -> None:
        """Let the LLM evaluate the conversation so far while the caller thinks
        (engines that keep a prompt cache have ``prepare``; others need nothing)."""
        prepare = getattr(self.llm, "prepare", None)
        if prepare is not None and self.config.prepare_between_turns:
            self._tasks.spawn(self._prepare(prepare, self.conversation.messages()), "llm-prepare")

    async def _prepare(self, prepare: Callable[..., Coroutine[Any, Any, None]], messages: list[Message],
                       **kw: object) -> None:
        if self._tools:
            kw["tools"] = self._tools  # the prompt the turn will use starts with them
        try:
            async with asyncio.timeout(PREPARE_TIMEOUT):
                await prepare(messages, **kw)
        except (ProviderError, TimeoutError, OSError) as exc:
            self._log.info("llm prepare failed: %s", exc)

    # -- the pipeline --------------------------------------------------------

    def _interrupt_downstream(self, reason: str) -> None:
        if self._ctx is not None:
            self._ctx.interrupt(reason, after=self._stage)

    def _heard_s(self, reply: Reply) -> float:
        return self._ctx.feedback.heard(reply.turn) if self._ctx is not None else 0.0

    def _close_turn(self, turn: int) -> None:
        if self._ctx is None or not turn:
            return
        record = self._ctx.latency.close(turn)
        if record is not None:
            self._perform(AgentEvent("latency", turn, record.as_dict()))

    def _mark(self, reply: Reply, name: str) -> None:
        if reply.draft is not None:
            reply.marks.setdefault(name, self._now())
        elif self._ctx is not None:
            self._ctx.mark(reply.turn, name)

    def _now(self) -> float:
        return self._ctx.clock.now() if self._ctx is not None else 0.0
